"""Market-1501 and any folder in its layout (bounding_box_train / query / bounding_box_test)."""

from __future__ import annotations

import os

from data_pipelines.datasets.common import (
    MARKET_FOLDERS,
    ReIDDataset,
    find_dataset_dir,
    make_dataset,
    parse_market_folder,
)

JUNK_PID = -1  # Market-1501: junk boxes, never scored
DISTRACTOR_PID = 0  # Market-1501: distractor boxes, kept in the gallery only


def read_market_layout(
    root: str, name: str = "market_layout", candidates=(), stats_key: str | None = None, drop_junk: bool = True
) -> ReIDDataset:
    """Any dataset laid out like Market-1501.

    Files ``<pid>_c<camera>...<ext>``; pid -1 (junk) is dropped everywhere when ``drop_junk``, pid 0
    (distractors) is kept in the gallery only. ``candidates`` are sub-folders of ``root`` to look in.
    A copy without bounding_box_train (a test-only set, for cross-domain evaluation) reads with an empty
    train split; the trainer refuses it (gldfa_jax.experiment_data), evaluation does not need it.
    """
    # query and gallery suffice (evaluation); the error message names the whole layout.
    base = find_dataset_dir(
        root, [MARKET_FOLDERS["query"], MARKET_FOLDERS["gallery"]], candidates, layout=list(MARKET_FOLDERS.values())
    )
    splits, unparsed, where = {}, [], {}
    for split, folder in MARKET_FOLDERS.items():
        where[split] = os.path.join(base, folder)
        if split == "train" and not os.path.isdir(where[split]):
            splits[split] = []
            continue
        items, bad = parse_market_folder(where[split])
        unparsed += bad
        if drop_junk:
            items = [it for it in items if it[1] != JUNK_PID]
        if split != "gallery":
            items = [it for it in items if it[1] not in (JUNK_PID, DISTRACTOR_PID)]
        splits[split] = items
    return make_dataset(
        name,
        base,
        splits["train"],
        splits["query"],
        splits["gallery"],
        unparsed,
        stats_key=stats_key if splits["train"] else None,
        where=where,
        optional=() if os.path.isdir(where["train"]) else ("train",),
    )


def read_market1501(root: str) -> ReIDDataset:
    """Market-1501 as distributed: ``root`` or ``root/Market-1501-v15.09.15``."""
    return read_market_layout(
        root, "market1501", ("Market-1501-v15.09.15", "Market-1501", "market1501"), stats_key="market1501"
    )
