"""CUHK03 from the official ``cuhk-03.mat`` (767/700 or classic splits) and the CUHK03-NP folder release.

The .mat is MATLAB v7.3 (HDF5): its crops are extracted once into ``<extract_dir>/<variant>/`` as PNGs named
``<pair>_<pid:03d>_<view>_<img:02d>.png`` — the names the 767/700 protocol files list — so h5py is needed
only for that first extraction. Camera id = 2 * (camera pair - 1) + (view - 1), i.e. 10 cameras.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_pipelines.datasets.common import (
    DatasetNotFoundError,
    ReIDDataset,
    describe_folder,
    find_dataset_dir,
    make_dataset,
)
from data_pipelines.datasets.market1501 import read_market_layout
from data_pipelines.optional import require

VARIANTS = ("labeled", "detected")
MAT_NAME = "cuhk-03.mat"
NEW_PROTOCOL = "cuhk03_new_protocol_config_{variant}.mat"
TESTSETS_JSON = "classic_testsets.json"
DONE_MARKER = ".extracted"
NUM_CLASSIC_SPLITS = 20


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {VARIANTS}")


def parse_cuhk03_name(name: str):
    """``'1_001_2_07.png'`` → (pair 1, pid-in-pair 1, view 2, image 7)."""
    stem = os.path.splitext(os.path.basename(name))[0]
    pair, pid, view, img = (int(x) for x in stem.split("_"))
    return pair, pid, view, img


def _camid(pair: int, view: int) -> int:
    return 2 * (pair - 1) + (view - 1)


def _import_h5py():
    # Needed only once, to extract the images.
    return require("h5py", "cuhk03", "Reading cuhk-03.mat (MATLAB v7.3 = HDF5)")


def extract_cuhk03(mat_path: str, out_dir: str, variant: str) -> str:
    """Writes the ``variant`` crops of cuhk-03.mat as PNGs into ``out_dir/variant`` plus the 20 classic
    test sets as JSON; returns the image folder. Idempotent (a marker file records completion)."""
    _check_variant(variant)
    img_dir = os.path.join(out_dir, variant)
    if os.path.exists(os.path.join(img_dir, DONE_MARKER)):
        return img_dir
    h5py = _import_h5py()
    os.makedirs(img_dir, exist_ok=True)
    with h5py.File(mat_path, "r") as mat:
        deref = lambda ref: mat[ref][()].T  # MATLAB is column-major: transpose back
        pairs = np.ravel(mat[variant][()])
        for pair_idx, pair_ref in enumerate(tqdm(pairs, desc=f"extracting CUHK03 {variant}", unit="pair")):
            cells = deref(pair_ref)  # [num_pids, 10] of references; images 0-4 view 1, 5-9 view 2
            for pid_idx in range(cells.shape[0]):
                for img_idx in range(cells.shape[1]):
                    img = deref(cells[pid_idx, img_idx])
                    if img.ndim != 3 or img.size == 0:
                        continue  # some identities have fewer than 10 images: empty cells
                    name = f"{pair_idx + 1}_{pid_idx + 1:03d}_{1 if img_idx < 5 else 2}_{img_idx + 1:02d}.png"
                    Image.fromarray(img.astype(np.uint8)).save(os.path.join(img_dir, name))
        json_path = os.path.join(out_dir, TESTSETS_JSON)
        if not os.path.exists(json_path) and "testsets" in mat:
            sets = [deref(ref).astype(int).reshape(-1, 2).tolist() for ref in np.ravel(mat["testsets"][()])]
            with open(json_path, "w") as f:
                json.dump(sets, f)
    open(os.path.join(img_dir, DONE_MARKER), "w").close()
    return img_dir


def read_cuhk03(
    root: str, variant: str = "labeled", split: str = "new", split_id: int = 0, extract_dir: str | None = None
) -> ReIDDataset:
    """CUHK03 from ``root`` (or ``root/cuhk03_release``) holding cuhk-03.mat.

    split="new": the 767/700 protocol (needs ``cuhk03_new_protocol_config_<variant>.mat`` in root or
    root/cuhk03_release; scipy). split="classic": the 20 test sets of 100 identities in the .mat
    (``split_id`` 0-19); the other 1,367 identities train; query = view 1, gallery = view 2 of the test ids.
    Images are extracted to ``extract_dir`` (default ``<root>/cuhk03_extracted``).
    """
    _check_variant(variant)
    if split not in ("new", "classic"):
        raise ValueError(f"split={split!r} is not 'new' (767/700 protocol) or 'classic' (1,367/100)")
    base = find_dataset_dir(root, [MAT_NAME], ["cuhk03_release"])
    extract_dir = extract_dir or os.path.join(os.path.expanduser(str(root)), "cuhk03_extracted")
    img_dir = extract_cuhk03(os.path.join(base, MAT_NAME), extract_dir, variant)
    name = f"cuhk03/{variant}"
    if split == "new":
        return _new_protocol(root, base, img_dir, variant, name)
    return _classic(extract_dir, img_dir, split_id, f"{name}/classic{split_id}")


def _new_protocol(root, base, img_dir, variant, name) -> ReIDDataset:
    from scipy.io import loadmat  # optional dependency: only this split format needs it

    cfg_name = NEW_PROTOCOL.format(variant=variant)
    cfg_dirs = [os.path.expanduser(str(root)), base]
    cfg_path = next((os.path.join(d, cfg_name) for d in cfg_dirs if os.path.exists(os.path.join(d, cfg_name))), None)
    if cfg_path is None:
        raise DatasetNotFoundError(
            f"The 767/700 split file {cfg_name} is not in {' or '.join(cfg_dirs)} "
            f"({describe_folder(base)}). Download it beside cuhk-03.mat, or use "
            f"split='classic'."
        )
    cfg = loadmat(cfg_path)
    files = [str(np.ravel(f)[0]) for f in np.ravel(cfg["filelist"])]
    labels = np.ravel(cfg["labels"]).astype(int)

    def items(key):
        out = []
        for i in np.ravel(cfg[key]).astype(int) - 1:  # MATLAB indices are 1-based
            pair, _, view, _ = parse_cuhk03_name(files[i])
            out.append((os.path.join(img_dir, files[i]), int(labels[i]), _camid(pair, view)))
        return out

    return make_dataset(
        name,
        img_dir,
        items("train_idx"),
        items("query_idx"),
        items("gallery_idx"),
        stats_key=name,
        where={"train": cfg_path, "query": cfg_path, "gallery": cfg_path},
    )


def _classic(extract_dir, img_dir, split_id, name) -> ReIDDataset:
    with open(os.path.join(extract_dir, TESTSETS_JSON)) as f:
        testsets = json.load(f)
    if not 0 <= split_id < len(testsets):
        raise ValueError(f"split_id={split_id} is outside 0..{len(testsets) - 1} (the classic test sets)")
    test_ids = {(int(p), int(i)) for p, i in testsets[split_id]}
    train, query, gallery = [], [], []
    for fname in sorted(os.listdir(img_dir)):
        if not fname.endswith(".png"):
            continue
        pair, pid, view, _ = parse_cuhk03_name(fname)
        global_pid = pair * 1000 + pid  # unique across camera pairs
        item = (os.path.join(img_dir, fname), global_pid, _camid(pair, view))
        if (pair, pid) not in test_ids:
            train.append(item)
        else:
            (query if view == 1 else gallery).append(item)
    return make_dataset(name, img_dir, train, query, gallery, where={s: img_dir for s in ("train", "query", "gallery")})


def read_cuhk03_np(root: str, variant: str = "labeled") -> ReIDDataset:
    """The CUHK03-NP folder release (767/700 split in Market layout): ``root``, ``root/<variant>`` or
    ``root/cuhk03-np/<variant>``."""
    _check_variant(variant)
    return read_market_layout(
        root, f"cuhk03_np/{variant}", (variant, os.path.join("cuhk03-np", variant)), stats_key=f"cuhk03/{variant}"
    )
