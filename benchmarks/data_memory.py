"""Host memory and read time of the decoded training and test images: prepare data.root's TFDS copy, feed P×K
training batches decoded per batch, read the test splits end to end. Prints one markdown table measured in this run.

    python -m benchmarks.data_memory --root DIR --height 384 --width 128 [--tfds-dir DIR] [--steps 500] [--cold]
        [--store tfds|ram]

--store tfds reads every split per batch from the TFDS copy (what a run does with splits larger than
experiment_data.RAM_FRACTION of memory), ram decodes them into memory (data.source = "folder" on a set that fits).

Peak RSS is the resident set of this process and all its children together (VmRSS from /proc, sampled every
50 ms), as absolute peak and as growth over the phase. Page-cache pages of the array_record files are not part of
it: the kernel reclaims them under pressure. --cold evicts those files from the page cache before each read phase
(posix_fadvise on those files only), so the reads come from the disk.
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
from gldfa_jax import experiment_data
from gldfa_jax.config import get_config

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
        "--tfds-dir",
        default=os.path.join(tempfile.gettempdir(), "gldfa_tfds"),
        help="data.tfds_dir (its copy of --root is reused while the files are unchanged)",
    )
    ap.add_argument("--steps", type=int, default=500, help="P×K training batches to gather")
    ap.add_argument("--eval-batch", type=int, default=128, help="contiguous batch of the query/gallery read")
    ap.add_argument("--cold", action="store_true", help="evict the TFDS copy from the page cache first")
    ap.add_argument(
        "--store",
        choices=("tfds", "ram"),
        default="tfds",
        help="decoded per batch from the TFDS copy, or decoded into RAM from the files",
    )
    a = ap.parse_args(argv)

    config = get_config()
    d = config.data
    d.name, d.root, d.height, d.width = a.name, a.root, a.height, a.width
    d.source, d.tfds_dir = a.store.replace("ram", "folder"), a.tfds_dir
    if a.store == "tfds":
        experiment_data.RAM_FRACTION = 0.0  # the per-batch path, whatever the size of the set
    rows = []
    started = time.time()
    with TreePeakMemory() as build:
        data = experiment_data.load_experiment_data(d)
    splits = {"train": data.train.images, "query": data.query.images, "gallery": data.gallery.images}
    n_all = sum(len(x) for x in splits.values())
    if a.store == "ram":
        files, where = [], f"decoded into RAM ({sum(x.nbytes for x in splits.values()) / GB:.2f} GB)"
        rows.append(("decode into RAM", n_all, build))
    else:
        copy = experiment_data.tfds_dir(d)
        files = [os.path.join(top, f) for top, _, names in os.walk(copy) for f in names if ".array_record" in f]
        built = any(os.path.getmtime(f) >= started for f in files)
        rows.append(("prepare the TFDS copy" if built else "open the TFDS copy (files unchanged)", n_all, build))
        where = (
            f"TFDS copy {copy} ({sum(map(os.path.getsize, files)) / GB:.2f} GB on disk) decoded per batch, "
            + "page cache "
            + ("evicted before each read phase" if a.cold else "as the preparation left it")
        )

    sampler = PKSampler(data.train.pids, d.num_identities, d.num_instances, config.seed)
    if a.cold:
        _evict(files)
    checksum = 0
    with TreePeakMemory() as train:
        for step in tqdm(range(a.steps), desc="training batches", unit="batch"):
            epoch, row = divmod(step, sampler.num_batches)
            if row == 0:
                order = np.asarray(sampler.epoch(epoch))
            checksum += int(splits["train"][order[row]].max())
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
                checksum += int(batch.max())
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
