"""Decode-once image loading: any PIL-readable file → RGB uint8 [H, W, 3], bilinear resize; into RAM
(`load_images`) or into an on-disk cache read on demand (`cache_images`)."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from absl import logging
from PIL import Image
from tqdm import tqdm

CACHE_VERSION = 1  # bump when the cache layout or decoding changes, so old caches are rebuilt


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


class CachedImages:
    """Read-only uint8 [N, H, W, 3] in a raw file, read on demand with numpy indexing: ``x[i]``, ``x[a:b]``,
    ``x[int_array]`` (any order, repeats allowed) and ``np.asarray(x)`` (everything).

    Reads are positioned reads (``os.preadv``) straight into the result: the file goes through the page cache,
    which the kernel reclaims as needed, and only the rows asked for are ever in the process's memory. (An
    ``np.memmap`` would count every page it has touched in the resident set until evicted, and an epoch
    touches them all.)
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: str, shape: tuple):
        self.path, self.shape = path, tuple(int(s) for s in shape)
        self._row = int(np.prod(self.shape[1:]))
        size = os.path.getsize(path)
        if size != self.nbytes:
            raise ValueError(
                f"{path} holds {size} bytes, not the {self.nbytes} of uint8 {list(self.shape)}; "
                "delete it (and its .json) to rebuild the cache."
            )
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)  # unlike __del__, also runs before interpreter shutdown

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._row

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"CachedImages({self.path!r}, shape={self.shape})"

    def _read_rows(self, start: int, out: np.ndarray) -> np.ndarray:
        """Rows start .. start + len(out) into `out` (one call may return fewer bytes than asked: loop)."""
        view, offset = memoryview(out.reshape(-1)), start * self._row
        while len(view):
            got = os.preadv(self._fd, [view], offset)
            if got <= 0:
                raise OSError(
                    f"{self.path}: unexpected end of file at byte {offset}; the cache is damaged, "
                    "delete it (and its .json) to rebuild it."
                )
            view, offset = view[got:], offset + got
        return out

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        n = self.shape[0]
        bad = idx[(idx < -n) | (idx >= n)]
        if bad.size:
            raise IndexError(f"index {int(bad.flat[0])} is out of bounds for {n} images")
        flat = np.where(idx < 0, idx + n, idx).reshape(-1)
        out = np.empty((flat.size,) + self.shape[1:], np.uint8)
        for j, i in enumerate(flat):
            self._read_rows(int(i), out[j : j + 1])
        return out.reshape(idx.shape + self.shape[1:])

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._gather(np.asarray(key))
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                return self._gather(np.arange(start, stop, step))
            return self._read_rows(start, np.empty((max(stop - start, 0),) + self.shape[1:], np.uint8))
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu" and idx.size:
            raise TypeError(f"CachedImages index {key!r} ({idx.dtype}): use an int, a slice or an integer array")
        return self._gather(idx.astype(np.intp, copy=False))

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("CachedImages lives on disk: np.asarray must copy it into memory (copy=False given)")
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _fingerprint(paths: list, height: int, width: int) -> str:
    """sha256 of the source files (path, size, mtime) and the decoded size: changes whenever the cache must."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, int(height), int(width)]).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(json.dumps([os.fspath(p), st.st_size, st.st_mtime_ns]).encode())
        except OSError:  # a missing file is skipped when decoding; its appearance must invalidate the cache
            h.update(json.dumps([os.fspath(p), -1, -1]).encode())
    return h.hexdigest()


def cache_images(
    records: Sequence, height: int, width: int, prefix: str, num_workers: int | None = None, progress: bool = True
):
    """Like `load_images`, but the pixels go to ``prefix.u8`` (raw uint8 [N, height, width, 3]) with a
    ``prefix.json`` sidecar, and come back as a `CachedImages` → ``(CachedImages, kept_records)``.

    A cache whose sidecar matches the records' files (paths, sizes, mtimes) and the size is reused; otherwise it
    is rebuilt, one image at a time, so building it never holds more than a few decoded images in memory.
    """
    _check_size(height, width)
    records = list(records)
    data_path, meta_path = prefix + ".u8", prefix + ".json"
    fingerprint = _fingerprint(_paths(records), height, width)
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        complete = os.path.exists(data_path) and os.path.getsize(data_path) == int(np.prod(meta["shape"]))
        if meta.get("fingerprint") == fingerprint and complete:
            logging.info("decoded images: reusing %s (%d images at %dx%d)", data_path, len(meta["kept"]), height, width)
            _report_skipped("cache_images", meta["failed"], len(records), len(meta["kept"]))
            return CachedImages(data_path, meta["shape"]), [records[i] for i in meta["kept"]]
        logging.warning(
            "decoded images: %s is stale (the source files or the size %dx%d changed, or the file is "
            "incomplete); rebuilding it",
            data_path,
            height,
            width,
        )
    else:
        logging.info("decoded images: building %s (%d images at %dx%d)", data_path, len(records), height, width)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tmp = f"{data_path}.{os.getpid()}.tmp"  # renamed into place when complete: a killed build leaves no cache
    kept, failed = [], []
    try:
        with open(tmp, "wb") as f:
            for i, img in _decoded(records, height, width, num_workers, progress, failed):
                f.write(np.ascontiguousarray(img).data)
                kept.append(i)
        _report_skipped("cache_images", failed, len(records), len(kept))
    except BaseException:
        os.remove(tmp)
        raise
    shape = [len(kept), int(height), int(width), 3]
    with contextlib.suppress(FileNotFoundError):  # never a stale sidecar beside new pixels, should we stop here
        os.remove(meta_path)
    os.replace(tmp, data_path)
    with open(f"{meta_path}.{os.getpid()}.tmp", "w") as f:
        json.dump(
            {
                "version": CACHE_VERSION,
                "fingerprint": fingerprint,
                "height": int(height),
                "width": int(width),
                "shape": shape,
                "kept": kept,
                "failed": failed,
            },
            f,
        )
    os.replace(f.name, meta_path)
    return CachedImages(data_path, shape), [records[i] for i in kept]
