"""Data-pipeline throughput: decode + resize, jit augmentation, the P×K training feed, synthetic rendering.

    python -m benchmarks.data_pipeline [--root DIR] [--height 384 --width 128] [--batch-ids 8 --instances 4]

``--root`` defaults to the real CUHK03 sample (../shared/data/cuhk03_sample); without it a synthetic world is
generated in a temporary folder. Prints a table of images/s on this machine's default JAX backend.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import jax

from data_pipelines.augment import augment_batch, augment_params, eval_transform
from data_pipelines.datasets import get_dataset
from data_pipelines.datasets.common import MARKET_FOLDERS
from data_pipelines.images import load_images
from data_pipelines.sampler import PKSampler
from data_pipelines.synthetic import generate
from gldfa_jax.config import get_config

DEFAULT_ROOT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "cuhk03_sample"
)


def _rate(n, seconds):
    return n / max(seconds, 1e-9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch-ids", type=int, default=8)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=30, help="augmentation batches to time")
    a = ap.parse_args(argv)
    rows = []
    tmp = None
    root = a.root
    if not os.path.isdir(root):
        tmp = tempfile.TemporaryDirectory()
        root = generate(tmp.name, identities=100, seed=0)
    ds = get_dataset("market_layout", root)
    records = ds.train + ds.query + ds.gallery

    for workers in sorted({1, a.workers}):
        t = time.perf_counter()
        images, kept = load_images(records, a.height, a.width, num_workers=workers)
        rows.append(
            (
                f"decode + resize → {a.height}x{a.width} ({workers} thread{'s' if workers > 1 else ''})",
                _rate(len(kept), time.perf_counter() - t),
            )
        )

    cfg = augment_params(get_config().data)
    train_imgs, _ = load_images(ds.train, a.height, a.width, num_workers=a.workers, progress=False)
    sampler = PKSampler([r.pid for r in ds.train], a.batch_ids, a.instances, seed=0)
    batch = a.batch_ids * a.instances
    key = jax.random.PRNGKey(0)
    x = train_imgs[sampler.epoch(0)[0]]
    augment_batch(key, x, cfg).block_until_ready()  # compile
    t = time.perf_counter()
    for i in range(a.steps):
        out = augment_batch(jax.random.fold_in(key, i), x, cfg)
    out.block_until_ready()
    rows.append((f"jit augment (flip+erase+normalise), batch {batch}", _rate(a.steps * batch, time.perf_counter() - t)))

    device_imgs = jax.device_put(train_imgs)  # uint8 kept in device memory: only indices travel per step
    t, n = time.perf_counter(), 0
    for step, idx in enumerate(sampler.epoch(1)[: a.steps]):
        out = augment_batch(jax.random.fold_in(key, step), device_imgs[idx], cfg)
        n += len(idx)
    out.block_until_ready()
    rows.append((f"P×K feed from device memory (gather + augment), batch {batch}", _rate(n, time.perf_counter() - t)))

    test = train_imgs[:256]
    eval_transform(test, cfg).block_until_ready()
    t = time.perf_counter()
    eval_transform(test, cfg).block_until_ready()
    rows.append(("test transform (normalise), 256 images", _rate(len(test), time.perf_counter() - t)))

    with tempfile.TemporaryDirectory() as out_dir:
        t = time.perf_counter()
        generate(out_dir, identities=60, seed=0, progress=False)
        n = sum(len(os.listdir(os.path.join(out_dir, f))) for f in MARKET_FOLDERS.values())
        rows.append(("synthetic world: render + JPEG (128x64)", _rate(n, time.perf_counter() - t)))
    if tmp:
        tmp.cleanup()

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\nData pipeline throughput — {when}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.devices()[0].platform}; "
        f"data: {os.path.basename(os.path.normpath(root))} ({len(records)} images)"
    )
    print(f"| {'stage':<62} | {'images/s':>9} |\n|{'-' * 64}|{'-' * 11}|")
    for name, rate in rows:
        print(f"| {name:<62} | {rate:9.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
