"""Image decoding: any PIL-readable file → RGB uint8 [H, W, 3], bilinear resize; all at once into RAM
(`load_images`) or on read from a random-access store of encoded images (`LazyImages`)."""

from __future__ import annotations

import collections
import io
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

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


def _paths(records) -> list:
    return [getattr(r, "path", r) for r in records]


def _decoded(records: list, height: int, width: int, num_workers: int | None, progress: bool, failed: list):
    """Yields (index, uint8 [height, width, 3]) of each readable record in order; appends "path (error)" of the
    others to `failed`. At most a few images per worker are in flight, so memory stays bounded."""
    paths = _paths(records)
    workers = num_workers or min(8, os.cpu_count() or 1)
    ahead = 4 * workers
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding and resizing
        pending = collections.deque()
        for i in tqdm(range(len(paths)), disable=not progress, desc=f"decoding images → {height}x{width}", unit="img"):
            while len(pending) < ahead and i + len(pending) < len(paths):
                pending.append(pool.submit(_try_decode, paths[i + len(pending)], height, width))
            img, err = pending.popleft().result()
            if img is None:
                failed.append(f"{paths[i]} ({err})")
            else:
                yield i, img


def _report_skipped(who: str, failed: list, total: int, kept: int) -> None:
    """One warning naming the unreadable files; an error when none could be read."""
    if failed:
        shown = "; ".join(failed[:20]) + (f"; ... (+{len(failed) - 20} more)" if len(failed) > 20 else "")
        warnings.warn(f"{who}: skipped {len(failed)} unreadable image(s) of {total}: {shown}", stacklevel=3)
    if total and not kept:
        raise ValueError(f"{who}: none of the {total} images could be read (first: {failed[0]})")


def load_images(records: Sequence, height: int, width: int, num_workers: int | None = None, progress: bool = True):
    """Decodes every record's image once → ``(uint8 [N, height, width, 3], kept_records)``.

    Unreadable, truncated or empty files are skipped with one warning naming them. ``records`` are
    ``Record``s (anything with ``.path``) or plain paths.
    """
    _check_size(height, width)
    records = list(records)
    out = np.empty((len(records), height, width, 3), np.uint8)
    kept, failed = [], []
    for i, img in _decoded(records, height, width, num_workers, progress, failed):
        out[len(kept)] = img
        kept.append(records[i])
    _report_skipped("load_images", failed, len(records), len(kept))
    return out[: len(kept)], kept


class LazyImages:
    """Read-only uint8 [N, H, W, 3] of encoded images, decoded and resized when indexed: ``x[i]``, ``x[a:b]``,
    ``x[int_array]`` (any order, repeats allowed) and ``np.asarray(x)`` (everything).

    ``fetch(indices)`` returns the encoded images (bytes or paths) at ``indices`` of a random-access store, such
    as a TFDS data source: only the rows asked for are ever decoded, so the store can be far larger than memory.
    A training batch decodes its P×K rows on a few threads (PIL releases the GIL while decoding and resizing).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, fetch: Callable, size: int, height: int, width: int, num_workers: int | None = None):
        _check_size(height, width)
        self._fetch, self.shape = fetch, (int(size), int(height), int(width), 3)
        self._pool = ThreadPoolExecutor(num_workers or min(4, os.cpu_count() or 1))
        weakref.finalize(self, self._pool.shutdown, wait=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyImages(shape={self.shape})"

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        n = self.shape[0]
        bad = idx[(idx < -n) | (idx >= n)]
        if bad.size:
            raise IndexError(f"index {int(bad.flat[0])} is out of bounds for {n} images")
        flat = np.where(idx < 0, idx + n, idx).reshape(-1)
        out = np.empty((flat.size,) + self.shape[1:], np.uint8)
        h, w = self.shape[1:3]
        encoded = self._fetch([int(i) for i in flat]) if flat.size else []
        for j, img in enumerate(self._pool.map(lambda e: decode_image(e, h, w), encoded)):
            out[j] = img
        return out.reshape(idx.shape + self.shape[1:])

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._gather(np.arange(*key.indices(self.shape[0])))
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu" and idx.size:
            raise TypeError(f"LazyImages index {key!r} ({idx.dtype}): use an int, a slice or an integer array")
        return self._gather(idx.astype(np.intp, copy=False))

    def load(self, progress: bool = True, chunk: int = 1024) -> np.ndarray:
        """Everything decoded into memory, a chunk at a time (with a progress bar)."""
        out = np.empty(self.shape, np.uint8)
        h, w = self.shape[1:3]
        with tqdm(total=len(self), disable=not progress, desc=f"decoding images → {h}x{w}", unit="img") as bar:
            for start in range(0, len(self), chunk):
                out[start : start + chunk] = self[start : start + chunk]
                bar.update(min(chunk, len(self) - start))
        return out

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("LazyImages decodes on read: np.asarray must copy it into memory (copy=False given)")
        out = self.load(progress=False)
        return out if dtype is None else out.astype(dtype)
