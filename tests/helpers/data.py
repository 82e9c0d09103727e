"""Tiny on-disk datasets for the data-pipeline tests, and where the shared real data lives."""

import os

import numpy as np
from PIL import Image

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
CUHK03_SAMPLE = os.path.join(SHARED, "data", "cuhk03_sample")


def write_image(path, seed=0, size=(16, 8), mode="RGB", fmt=None):
    """A small random image (height, width = size) saved at ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def market_tree(root, layout):
    """``layout``: {folder: [file names]} → files written under root; returns root."""
    for i, (folder, names) in enumerate(layout.items()):
        for j, name in enumerate(names):
            write_image(os.path.join(root, folder, name), seed=100 * i + j)
    return root


def market_names(pids_cams, pattern="{pid:04d}_c{cam}s1_{idx:06d}_00.jpg"):
    """File names for [(pid, cam, count)]."""
    out = []
    for pid, cam, count in pids_cams:
        for k in range(count):
            out.append(
                pattern.format(pid=pid, cam=cam, idx=k)
                if pid >= 0
                else pattern.replace("{pid:04d}", "-1").format(pid=pid, cam=cam, idx=k)
            )
    return out


def small_market(root, pattern="{pid:04d}_c{cam}s1_{idx:06d}_00.jpg"):
    """3 train ids (pids 2, 7, 9), junk -1 everywhere, distractors 0 in the gallery; 2 test ids (11, 12)."""
    return market_tree(
        root,
        {
            "bounding_box_train": market_names([(2, 1, 2), (7, 2, 3), (9, 1, 1), (9, 3, 1), (-1, 1, 2)], pattern),
            "query": market_names([(11, 1, 1), (12, 2, 1)], pattern),
            "bounding_box_test": market_names([(11, 2, 2), (12, 1, 1), (0, 1, 2), (-1, 4, 3)], pattern),
        },
    )
