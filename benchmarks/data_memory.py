"""Host memory of the decoded-image cache (data.cache_dir): build it, feed P×K training batches, read the
test splits end to end. Prints one markdown table measured in this run.

    python -m benchmarks.data_memory --root DIR --height 384 --width 128 [--cache-dir DIR] [--steps 500] [--cold]
        [--store cache|memmap|ram]

--store memmap reads the same cache files through np.memmap, ram decodes into memory (data.cache_dir = ""):
the two alternatives to CachedImages' positioned reads.

Peak RSS is the resident set of this process and all its children together (VmRSS from /proc, sampled every
50 ms), as absolute peak and as growth over the phase. Page-cache pages of the cache file are not part of it:
the kernel reclaims them under pressure. --cold evicts the cache files from the page cache before each read
phase (posix_fadvise on those files only), so the reads come from the disk.
"""

import argparse
import os
import platform
import tempfile
import time

import numpy as np
from tqdm import tqdm

from benchmarks.retrieval import PeakMemory
from data_pipelines.sampler import PKSampler
from gldfa_jax.config import get_config
from gldfa_jax.experiment_data import load_experiment_data

GB = 1e9


def _tree_pids(pid: int) -> list:
    """pid and all its descendants (Linux /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # the process ended between the listing and the read
            pass
    return out


class TreePeakMemory(PeakMemory):
    """PeakMemory of the whole process tree (this process and its worker processes), sampled every 50 ms."""

    def __init__(self, interval=0.05):
        super().__init__(interval)

    @staticmethod
    def rss():
        total = 0
        for p in _tree_pids(os.getpid()):
            try:
                with open(f"/proc/{p}/status") as f:
                    total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            except (OSError, StopIteration):  # gone, or a zombie without memory
                pass
        return total


def _evict(paths) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="dataset folder")
    ap.add_argument("--name", default="market_layout", help="dataset registry name (data.name)")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "gldfa_image_cache"),
        help="data.cache_dir (reused when it already holds this dataset at this size)",
    )
    ap.add_argument("--steps", type=int, default=500, help="P×K training batches to gather")
    ap.add_argument("--eval-batch", type=int, default=128, help="contiguous batch of the query/gallery read")
    ap.add_argument("--cold", action="store_true", help="evict the cache files from the page cache first")
    ap.add_argument(
        "--store",
        choices=("cache", "memmap", "ram"),
        default="cache",
        help="CachedImages (data.cache_dir), np.memmap of the cache files, or decoded into RAM",
    )
    a = ap.parse_args(argv)

    config = get_config()
    d = config.data
    d.name, d.root, d.height, d.width = a.name, a.root, a.height, a.width
    d.cache_dir = "" if a.store == "ram" else a.cache_dir
    rows = []
    started = time.time()
    with TreePeakMemory() as build:
        data = load_experiment_data(d)
    splits = {"train": data.train.images, "query": data.query.images, "gallery": data.gallery.images}
    n_all = sum(len(x) for x in splits.values())
    if a.store == "ram":
        files, where = [], f"decoded into RAM ({sum(x.nbytes for x in splits.values()) / GB:.2f} GB)"
        rows.append(("decode into RAM", n_all, build))
    else:
        files = [x.path for x in splits.values()]
        built = any(os.path.getmtime(f) >= started for f in files)
        rows.append(("build the cache" if built else "reuse the cache (sidecar matched)", n_all, build))
        where = (
            f"cache {a.cache_dir} ({sum(map(os.path.getsize, files)) / GB:.2f} GB on disk) read through "
            + ("np.memmap" if a.store == "memmap" else "CachedImages (os.preadv)")
            + ", page cache "
            + ("evicted before each read phase" if a.cold else "as the build left it")
        )
        if a.store == "memmap":
            splits = {k: np.memmap(x.path, np.uint8, "r", shape=x.shape) for k, x in splits.items()}

    sampler = PKSampler(data.train.pids, d.num_identities, d.num_instances, config.seed)
    if a.cold:
        _evict(files)
    checksum = 0
    with TreePeakMemory() as train:
        for step in tqdm(range(a.steps), desc="training batches", unit="batch"):
            epoch, row = divmod(step, sampler.num_batches)
            if row == 0:
                order = np.asarray(sampler.epoch(epoch))
            checksum += int(splits["train"][order[row]].max())  # touch every byte read
    rows.append(
        (
            f"training batches ({d.num_identities}×{d.num_instances}, gather)",
            a.steps * d.num_identities * d.num_instances,
            train,
        )
    )

    if a.cold:
        _evict(files)
    n_test = len(splits["query"]) + len(splits["gallery"])
    with TreePeakMemory() as test, tqdm(total=n_test, desc="query + gallery", unit="img") as bar:
        for images in (splits["query"], splits["gallery"]):
            for start in range(0, len(images), a.eval_batch):
                batch = images[start : start + a.eval_batch]
                checksum += int(batch.max())  # touch every byte (a memmap slice reads nothing until then)
                bar.update(len(batch))
    rows.append((f"query + gallery (contiguous batches of {a.eval_batch})", n_test, test))

    print(
        f"\n{a.name} at {a.root}: {len(splits['train'])} train, {len(splits['query'])} query, "
        f"{len(splits['gallery'])} gallery images at {a.height}x{a.width}, {where}. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; checksum {checksum}.\n"
    )
    print("| phase | images | seconds | images/s | peak RSS, process tree (GB) | growth (GB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, m in rows:
        print(
            f"| {name} | {n} | {m.seconds:.1f} | {n / max(m.seconds, 1e-9):.0f} | "
            f"{(m.start + m.peak) / GB:.2f} | {m.peak / GB:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
