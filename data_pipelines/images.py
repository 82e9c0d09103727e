"""Decode-once image loading: any PIL-readable file → RGB uint8 [H, W, 3], bilinear resize."""
from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm


def _check_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height={height}, width={width}: both must be positive integers")


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, CMYK, RGBA, palette, 16-bit ... → RGB (transparency composited on black)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img, np.float64) / 256.0).clip(0, 255).astype(np.uint8))
    return img.convert("RGB")


def decode_image(source, height: int, width: int) -> np.ndarray:
    """Path or encoded bytes → uint8 [height, width, 3]. Raises on unreadable data."""
    _check_size(height, width)
    fobj = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fobj) as img:
        img.load()  # force the full decode here so truncated files fail now
        img = to_rgb(img)
        if img.size != (width, height):
            img = img.resize((width, height), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _try_decode(path, height, width):
    try:
        return decode_image(path, height, width), None
    except Exception as e:  # any decoder failure means "skip this file", never a crash mid-epoch
        return None, f"{type(e).__name__}: {e}"


def load_images(records: Sequence, height: int, width: int, num_workers: int | None = None,
                progress: bool = True):
    """Decodes every record's image once → ``(uint8 [N, height, width, 3], kept_records)``.

    Unreadable, truncated or empty files are skipped with one warning naming them. ``records`` are
    ``Record``s (anything with ``.path``) or plain paths.
    """
    _check_size(height, width)
    records = list(records)
    paths = [getattr(r, "path", r) for r in records]
    workers = num_workers or min(8, os.cpu_count() or 1)
    out = np.empty((len(records), height, width, 3), np.uint8)
    kept, failed = [], []
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding and resizing
        results = pool.map(lambda p: _try_decode(p, height, width), paths)
        for rec, path, (img, err) in tqdm(zip(records, paths, results), total=len(records), disable=not progress,
                                          desc=f"decoding images → {height}x{width}", unit="img"):
            if img is None:
                failed.append(f"{path} ({err})")
                continue
            out[len(kept)] = img
            kept.append(rec)
    if failed:
        shown = "; ".join(failed[:20]) + (f"; ... (+{len(failed) - 20} more)" if len(failed) > 20 else "")
        warnings.warn(f"load_images: skipped {len(failed)} unreadable image(s) of {len(records)}: {shown}",
                      stacklevel=2)
    if records and not kept:
        raise ValueError(f"load_images: none of the {len(records)} images could be read (first: {failed[0]})")
    return out[:len(kept)], kept
