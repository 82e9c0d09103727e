"""MSMT17 V1 (``train/``, ``test/``) and V2 (``mask_train_v2/``, ``mask_test_v2/``) with their list files.

List lines are ``<pid folder>/<file> <label>``; file names ``<pid>_<index>_<camera 01-15>_...jpg``.
"""

from __future__ import annotations

import os

from data_pipelines.datasets.common import DatasetNotFoundError, ReIDDataset, find_dataset_dir, make_dataset

LISTS = {"train": "list_train.txt", "val": "list_val.txt", "query": "list_query.txt", "gallery": "list_gallery.txt"}
IMAGE_DIRS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}


def _read_list(list_path: str, img_dir: str):
    items, unparsed = [], []
    with open(list_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rel, label = line.rsplit(maxsplit=1)
                camid = int(os.path.basename(rel).split("_")[2]) - 1
                items.append((os.path.join(img_dir, rel), int(label), camid))
            except (ValueError, IndexError):
                unparsed.append(f"{os.path.basename(list_path)}: {line!r}")
    return items, unparsed


def read_msmt17(root: str, include_val: bool = True) -> ReIDDataset:
    """MSMT17 from ``root`` or ``root/MSMT17_V1|MSMT17_V2|MSMT17``; ``include_val`` adds list_val.txt to
    training (the usual protocol: 1,041 ids, 32,621 images)."""
    candidates = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
    base = find_dataset_dir(root, [LISTS["train"], LISTS["query"], LISTS["gallery"]], candidates)
    version = next(
        (v for v, dirs in IMAGE_DIRS.items() if all(os.path.isdir(os.path.join(base, d)) for d in dirs)), None
    )
    if version is None:
        raise DatasetNotFoundError(
            f"{base} holds the MSMT17 list files but neither train/ + test/ (V1) nor mask_train_v2/ + "
            f"mask_test_v2/ (V2); found {sorted(os.listdir(base))[:12]}."
        )
    train_dir, test_dir = (os.path.join(base, d) for d in IMAGE_DIRS[version])
    parts = ["train"] + (["val"] if include_val and os.path.exists(os.path.join(base, LISTS["val"])) else [])
    train, unparsed = [], []
    for p in parts:
        items, bad = _read_list(os.path.join(base, LISTS[p]), train_dir)
        train += items
        unparsed += bad
    query, bad_q = _read_list(os.path.join(base, LISTS["query"]), test_dir)
    gallery, bad_g = _read_list(os.path.join(base, LISTS["gallery"]), test_dir)
    where = {
        "train": os.path.join(base, LISTS["train"]),
        "query": os.path.join(base, LISTS["query"]),
        "gallery": os.path.join(base, LISTS["gallery"]),
    }
    return make_dataset(
        f"msmt17/{version}",
        base,
        train,
        query,
        gallery,
        unparsed + bad_q + bad_g,
        stats_key="msmt17" if include_val else None,
        where=where,
    )
