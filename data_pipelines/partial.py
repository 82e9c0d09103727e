"""Partial-Market / Partial-Duke (§4.2): a Market-layout copy in which a seeded fraction of the images is
occluded (a horizontal band of 10-30 % of the height erased) and another fraction is cropped (a vertical window
losing 20-30 % of the height, re-stretched to the original size), modelling occlusion and box errors.

Exactly round(fraction * n) images of each selected split get each operation (disjoint sets); the others are
copied unchanged. Options, seed and every image's operation go to ``partial_manifest.json`` beside the data.

CLI: ``python -m data_pipelines.partial --src DIR --out DIR [--seed S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_pipelines.datasets.common import MARKET_FOLDERS, DatasetNotFoundError, describe_folder, list_images
from data_pipelines.images import to_rgb

MANIFEST = "partial_manifest.json"


def _check_range(name, rng_):
    lo, hi = rng_
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"{name}={tuple(rng_)} must satisfy 0 < low <= high < 1 (fractions of the height)")


def occlude(img: np.ndarray, rng: np.random.Generator, height_range=(0.1, 0.3), fill: str = "noise"):
    """Erases a full-width horizontal band of U(height_range) of the height at a random row.

    Returns (image, {"top": row, "rows": n}). ``fill``: "noise" (uniform 0-255) or "black".
    """
    h = img.shape[0]
    rows = max(1, int(round(rng.uniform(*height_range) * h)))
    top = int(rng.integers(0, h - rows + 1))
    out = img.copy()
    out[top : top + rows] = rng.integers(0, 256, out[top : top + rows].shape, dtype=np.uint8) if fill == "noise" else 0
    return out, {"top": top, "rows": rows}


def crop_vertical(img: np.ndarray, rng: np.random.Generator, cut_range=(0.2, 0.3)):
    """Keeps a full-width window missing U(cut_range) of the height at a random offset, re-stretched to the
    original size (bilinear). Returns (image, {"top": row, "rows": kept rows})."""
    h, w = img.shape[:2]
    keep = h - max(1, int(round(rng.uniform(*cut_range) * h)))
    top = int(rng.integers(0, h - keep + 1))
    out = Image.fromarray(img[top : top + keep]).resize((w, h), Image.BILINEAR)
    return np.asarray(out), {"top": top, "rows": keep}


def make_partial(
    src: str,
    out: str,
    seed: int = 0,
    splits=("train", "query", "gallery"),
    occlude_fraction: float = 0.3,
    crop_fraction: float = 0.3,
    occlude_range=(0.1, 0.3),
    crop_range=(0.2, 0.3),
    fill: str = "noise",
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Writes the partial version of the Market-layout dataset ``src`` into ``out``; returns ``out``."""
    for name, frac in (("occlude_fraction", occlude_fraction), ("crop_fraction", crop_fraction)):
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"{name}={frac} must lie in [0, 1]")
    if occlude_fraction + crop_fraction > 1.0:
        raise ValueError(
            f"occlude_fraction + crop_fraction = {occlude_fraction + crop_fraction} > 1: "
            f"each image gets at most one operation"
        )
    _check_range("occlude_range", occlude_range)
    _check_range("crop_range", crop_range)
    if fill not in ("noise", "black"):
        raise ValueError(f"fill={fill!r} must be 'noise' or 'black'")
    bad = [s for s in splits if s not in MARKET_FOLDERS]
    if bad:
        raise ValueError(f"splits={list(splits)}: {bad} not in {list(MARKET_FOLDERS)}")
    missing = [f for f in MARKET_FOLDERS.values() if not os.path.isdir(os.path.join(src, f))]
    if missing:
        raise DatasetNotFoundError(f"src={src} is not in Market layout: missing {missing}; {describe_folder(src)}")
    if os.path.abspath(src) == os.path.abspath(out):
        raise ValueError(f"out={out} must differ from src")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(f"out={out} exists and is not empty; choose a new folder or pass overwrite=True (--overwrite)")

    manifest = dict(
        generator="data_pipelines.partial",
        src=os.path.abspath(src),
        seed=seed,
        splits=list(splits),
        occlude_fraction=occlude_fraction,
        crop_fraction=crop_fraction,
        occlude_range=list(occlude_range),
        crop_range=list(crop_range),
        fill=fill,
        images={},
    )
    for split_idx, (split, folder) in enumerate(MARKET_FOLDERS.items()):
        src_dir, dst_dir = os.path.join(src, folder), os.path.join(out, folder)
        os.makedirs(dst_dir, exist_ok=True)
        files = list_images(src_dir)
        ops = np.array(["none"] * len(files), dtype=object)
        rng = np.random.default_rng([seed, split_idx])
        if split in splits:
            order = rng.permutation(len(files))
            n_occ, n_crop = round(occlude_fraction * len(files)), round(crop_fraction * len(files))
            ops[order[:n_occ]] = "occlude"
            ops[order[n_occ : n_occ + n_crop]] = "crop"
        for path, op in tqdm(list(zip(files, ops)), desc=f"partial {folder}", unit="img", disable=not progress):
            name = os.path.basename(path)
            dst = os.path.join(dst_dir, name)
            if op == "none":
                shutil.copyfile(path, dst)
                continue
            try:
                with Image.open(path) as im:
                    img = np.asarray(to_rgb(im))
            except Exception as e:  # unreadable source images are copied as they are and reported
                shutil.copyfile(path, dst)
                manifest["images"][f"{folder}/{name}"] = {"op": "unreadable", "error": str(e)}
                continue
            img, params = (
                occlude(img, rng, occlude_range, fill) if op == "occlude" else crop_vertical(img, rng, crop_range)
            )
            Image.fromarray(img).save(dst, **({"quality": 95} if name.lower().endswith((".jpg", ".jpeg")) else {}))
            manifest["images"][f"{folder}/{name}"] = {"op": op, **params}
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_pipelines.partial", description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, help="dataset in Market-1501 layout")
    ap.add_argument("--out", required=True, help="folder to write the partial dataset into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", default="train,query,gallery", help="comma-separated splits to modify")
    ap.add_argument("--occlude-fraction", type=float, default=0.3)
    ap.add_argument("--crop-fraction", type=float, default=0.3)
    ap.add_argument("--fill", default="noise", choices=("noise", "black"))
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    try:
        make_partial(
            a.src,
            a.out,
            seed=a.seed,
            splits=tuple(s for s in a.splits.split(",") if s),
            occlude_fraction=a.occlude_fraction,
            crop_fraction=a.crop_fraction,
            fill=a.fill,
            overwrite=a.overwrite,
        )
    except ValueError as e:
        ap.error(str(e))
    from data_pipelines.datasets import get_dataset

    print(get_dataset("market_layout", a.out).summary())
    print(f"manifest: {os.path.join(a.out, MANIFEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
