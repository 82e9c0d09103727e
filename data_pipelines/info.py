"""``python -m data_pipelines.info ROOT [--json] [--dataset NAME] [--variant V]``: a dataset's summary.

Without ``--dataset`` the layout is recognised: cuhk-03.mat → cuhk03, MSMT17 list files → msmt17, the
Market-1501 / DukeMTMC-reID release folders → those datasets, any other Market-layout folder → market_layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from data_pipelines.datasets import available_datasets, get_dataset
from data_pipelines.datasets.common import MARKET_FOLDERS, MARKET_LAYOUT, describe_folder

_SIGNATURES = [  # (dataset, paths relative to ROOT whose presence identifies it)
    ("cuhk03", ("cuhk-03.mat",)),
    ("cuhk03", ("cuhk03_release/cuhk-03.mat",)),
    ("msmt17", ("list_train.txt",)),
    ("msmt17", ("MSMT17_V1",)),
    ("msmt17", ("MSMT17_V2",)),
    ("market1501", ("Market-1501-v15.09.15",)),
    ("dukemtmcreid", ("DukeMTMC-reID",)),
    ("cuhk03_np", ("cuhk03-np",)),
    ("cuhk03_np", ("labeled", "detected")),
    ("market_layout", (MARKET_FOLDERS["train"],)),
]


def detect_dataset(root: str) -> str:
    """Registry name for the dataset at ``root``; ValueError saying what was found otherwise."""
    if not os.path.isdir(root):
        raise ValueError(f"ROOT={root}: {describe_folder(root)}; give the folder holding a dataset")
    for name, paths in _SIGNATURES:
        if all(os.path.exists(os.path.join(root, p)) for p in paths):
            return name
    raise ValueError(
        f"ROOT={root} is not a dataset layout I recognise ({describe_folder(root)}); expected "
        f"the Market layout ({MARKET_LAYOUT}), cuhk-03.mat or MSMT17 list files, or "
        f"pass --dataset one of {available_datasets()}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_pipelines.info", description="Print a re-ID dataset's summary.")
    ap.add_argument("root", metavar="ROOT", help="dataset folder as distributed")
    ap.add_argument("--json", action="store_true", help="print {split: {images, identities, cameras}} as JSON")
    ap.add_argument("--dataset", choices=available_datasets(), help="registry name (default: recognised)")
    ap.add_argument("--variant", choices=("labeled", "detected"), help="cuhk03 / cuhk03_np variant")
    a = ap.parse_args(argv)
    options = {"variant": a.variant} if a.variant else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = get_dataset(a.dataset or detect_dataset(a.root), a.root, **options)
        except (ValueError, ImportError) as e:
            ap.error(str(e))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if a.json:
        print(json.dumps(ds.stats(), indent=1))
    else:
        print(ds.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
