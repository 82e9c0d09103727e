"""Large-gallery retrieval: FAISS shortlist + exact global+LSA re-score (`gldfa_jax.gallery_index`) on a gallery of
up to millions of images, against the exact global+LSA ranking.

    python -m benchmarks.large_gallery --gallery 1000000 [--queries 200] [--checkpoint runs/synthetic] [--json]

Features with re-ID structure: the trained checkpoint's features of the synthetic world (train, query and gallery,
README command 1 trains it) are the source. Each new identity takes a source identity and adds an offset drawn
with the per-dimension spread of the source's identity means; each of its images (1 + Poisson(per_identity - 1) of
them) is one source image of that identity plus the offset, mapped isometrically into `--dim` dimensions (a random
orthonormal map: distances are kept) plus Gaussian noise of a quarter of the source's within-identity spread. A
query is one more image of a gallery identity. Gallery blocks are regenerated from their seed, so the exact
reference streams them and the float32 features never exist whole.

Reports the index build (FAISS training, adding, saving; feature generation is timed apart), p50/p99 latency of
one query at a time (shortlist, re-score, sort) on the reopened index, peak RSS up to the end of the queries
(ru_maxrss: mapped feature pages included), and against the exact global+LSA ranking of the float32 features:
recall@10 and the AP with the exact top 10 as the relevant set (1 when they come first, in any order).
With --json the last line is {"gallery", "build_s", "p50_ms", "p99_ms", "recall_at_10", "map_vs_exact",
"peak_rss_gb"}.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from gldfa_jax import checkpointing, distances, features, gallery_index
from gldfa_jax.experiment_data import load_experiment_data
from gldfa_jax.lsa import LSAOptions

BLOCK_IDENTITIES = 1024
NOISE = 0.25  # Gaussian noise, as a share of the source's within-identity spread


def source_features(checkpoint: str, cache: str) -> dict:
    """{"global" [n, d], "local" [n, k, d], "pids" [n]} of the checkpoint's synthetic world, every split (identities
    renumbered apart per split), cached in `cache`."""
    if os.path.exists(cache):
        with np.load(cache) as z:
            return dict(z)
    config, model, variables, _ = checkpointing.load_checkpoint(checkpoint)
    data = load_experiment_data(config.data, need_train=True)
    parts, offset = [], 0
    for split in (data.train, data.query, data.gallery):
        feats = features.extract_features(
            model, variables, split.images, config.data, batch_size=config.eval.batch_size, flip=config.data.test_flip
        )
        parts.append({"global": feats["global"], "local": feats["local"], "pids": split.pids + offset})
        offset += int(split.pids.max()) + 1
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache, **merged)
    return merged


class FeatureWorld:
    """Deterministic identity blocks of re-ID-structured features derived from `source` (module docstring)."""

    def __init__(self, source: dict, dim: int, per_identity: int, seed: int):
        order = np.argsort(source["pids"], kind="stable")
        self.g, self.l = source["global"][order], source["local"][order]
        pids = source["pids"][order]
        _, self.first, self.count = np.unique(pids, return_index=True, return_counts=True)
        ids = np.repeat(np.arange(len(self.first)), self.count)
        mean_g = np.stack([self.g[ids == i].mean(0) for i in range(len(self.first))])
        mean_l = np.stack([self.l[ids == i].mean(0) for i in range(len(self.first))])
        self.spread_g, self.spread_l = mean_g.std(0), mean_l.std(0)
        self.noise = NOISE * float(np.sqrt(np.mean((self.g - mean_g[ids]) ** 2)))
        rng = np.random.default_rng([seed, 0])
        d0 = self.g.shape[1]
        if dim < d0 or self.l.shape[2] != d0:
            raise ValueError(f"--dim {dim} must be at least the source's feature size {d0} (global and stripes).")
        self.lift = np.linalg.qr(rng.standard_normal((dim, d0)))[0].T.astype(np.float32)  # [d0, dim], orthonormal
        self.dim, self.per_identity, self.seed = dim, per_identity, seed

    def _identities(self, block: int):
        rng = np.random.default_rng([self.seed, 1, block])
        base = rng.integers(len(self.first), size=BLOCK_IDENTITIES)
        off_g = rng.standard_normal((BLOCK_IDENTITIES, self.g.shape[1])) * self.spread_g
        off_l = rng.standard_normal((BLOCK_IDENTITIES, *self.l.shape[1:])) * self.spread_l
        return base, off_g, off_l, 1 + rng.poisson(self.per_identity - 1, BLOCK_IDENTITIES)

    def _images(self, rng, base, off_g, off_l, which) -> dict:
        """Images of identities `which` (indices into the block's arrays)."""
        src = self.first[base[which]] + (rng.random(len(which)) * self.count[base[which]]).astype(int)
        shape_g, shape_l = (len(which), self.dim), (len(which), self.l.shape[1], self.dim)
        g = (self.g[src] + off_g[which]).astype(np.float32) @ self.lift
        g += self.noise * rng.standard_normal(shape_g, np.float32)
        loc = (self.l[src] + off_l[which]).astype(np.float32) @ self.lift
        loc += self.noise * rng.standard_normal(shape_l, np.float32)
        return {"global": g, "local": loc}

    def block(self, b: int) -> tuple[dict, np.ndarray]:
        """(features, pids) of the images of identity block b."""
        base, off_g, off_l, counts = self._identities(b)
        which = np.repeat(np.arange(BLOCK_IDENTITIES), counts)
        return (
            self._images(np.random.default_rng([self.seed, 2, b]), base, off_g, off_l, which),
            b * BLOCK_IDENTITIES + which,
        )

    def gallery(self, size: int, desc: str):
        """Yield (start, features, pids) blocks of the first `size` gallery images."""
        start, b = 0, 0
        with tqdm(total=size, desc=desc, unit="img", unit_scale=True) as bar:
            while start < size:
                feats, pids = self.block(b)
                n = min(len(pids), size - start)
                yield start, {k: v[:n] for k, v in feats.items()}, pids[:n]
                start, b = start + n, b + 1
                bar.update(n)

    def queries(self, num: int, num_identities: int) -> dict:
        """`num` new images of gallery identities (pid < num_identities)."""
        rng = np.random.default_rng([self.seed, 3])
        pids = rng.choice(num_identities, num, replace=False)
        parts = []
        for pid in pids:
            base, off_g, off_l, _ = self._identities(pid // BLOCK_IDENTITIES)
            parts.append(self._images(rng, base, off_g, off_l, np.array([pid % BLOCK_IDENTITIES])))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def exact_top(world: FeatureWorld, queries: dict, size: int, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [Q, topk] of the exact global+LSA ranking over the float32 gallery, streamed block by block, and
    their ranks [Q, topk] by global distance alone: how deep a global shortlist must reach)."""
    num_q = len(queries["global"])
    best_d, best_i = np.full((num_q, 0), np.inf, np.float32), np.zeros((num_q, 0), np.int64)
    by_global = np.empty((num_q, size), np.float32)
    for start, feats, _ in world.gallery(size, "exact global+lsa"):
        n = len(feats["global"])
        padded = {k: np.pad(v, [(0, -n % 4096)] + [(0, 0)] * (v.ndim - 1)) for k, v in feats.items()}
        for _, block in distances.iter_mode_blocks(queries, padded, ("global", "global+lsa"), LSAOptions()):
            by_global[:, start : start + n], dist = block["global"][:, :n], block["global+lsa"][:, :n]
        d = np.concatenate([best_d, dist], 1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + n), dist.shape)], 1)
        keep = np.argsort(d, 1, kind="stable")[:, :topk]
        best_d, best_i = np.take_along_axis(d, keep, 1), np.take_along_axis(i, keep, 1)
    mine = np.take_along_axis(by_global, best_i, 1)
    return best_i, np.stack([(row[None, :] < m[:, None]).sum(1) for row, m in zip(by_global, mine)])


def agreement(found: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """(recall@k, AP) of rankings `found` [Q, n] with each query's exact top k [Q, k] as the relevant set."""
    recalls, aps = [], []
    k = exact.shape[1]
    for f, e in zip(found, exact):
        hit = np.isin(f, e)
        recalls.append(hit[:k].sum() / k)
        ranks = np.flatnonzero(hit) + 1
        aps.append(float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / k)
    return float(np.mean(recalls)), float(np.mean(aps))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def run(args) -> dict:
    from gldfa_jax.config import get_config

    given = {k: getattr(args, k) for k in ("index", "nlist", "nprobe", "shortlist", "local_dtype")}
    config = dataclasses.replace(
        gallery_index.IndexOptions.from_config(get_config()), **{k: v for k, v in given.items() if v is not None}
    )
    source = source_features(args.checkpoint, os.path.join(args.workdir, "source_features.npz"))
    world = FeatureWorld(source, args.dim, args.per_identity, args.seed)
    folder = os.path.join(args.workdir, f"index_{args.gallery}")
    shutil.rmtree(folder, ignore_errors=True)
    timer = {"generate": 0.0, "train": 0.0, "add": 0.0, "save": 0.0}

    def timed(key, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        timer[key] += time.perf_counter() - t
        return out

    # IVF trains on a sample spread over every identity block, as a real gallery's would be.
    share = min(1.0, config.train_size / args.gallery)
    rng = np.random.default_rng([args.seed, 4])
    t = time.perf_counter()
    sample = [
        feats["global"][rng.random(len(pids)) < share]
        for _, feats, pids in world.gallery(args.gallery, "IVF training sample")
    ]
    timer["generate"] += time.perf_counter() - t
    local_shape = (world.l.shape[1], args.dim)
    index = timed(
        "train",
        gallery_index.create,
        folder,
        config,
        "benchmarks.large_gallery",
        np.concatenate(sample),
        local_shape,
        args.gallery,
    )
    del sample
    num_identities = 0
    blocks = world.gallery(args.gallery, "index add")
    while True:
        t = time.perf_counter()
        item = next(blocks, None)
        timer["generate"] += time.perf_counter() - t
        if item is None:
            break
        start, feats, pids = item
        timed("add", index.add, feats, [f"synthetic/{start + i}" for i in range(len(pids))])
        num_identities = int(pids[-1]) + 1
    timed("save", index.save)
    del index
    rss_build = peak_rss_gb()

    queries = world.queries(args.queries, num_identities)
    one = lambda i: {k: v[i : i + 1] for k, v in queries.items()}
    runs = {}
    for nprobe in [config.nprobe] + [n for n in args.sweep_nprobe if n != config.nprobe]:
        # Reopened for every setting, so none finds the stripes of the same queries already mapped.
        index = gallery_index.open_index(folder, "benchmarks.large_gallery")
        at_nprobe, latency, found = dataclasses.replace(config, nprobe=nprobe), [], []
        for i in range(3):  # compile and warm up
            index.search({k: v + 1.0 for k, v in one(i).items()}, 10, at_nprobe)
        for i in tqdm(range(args.queries), desc=f"queries (nprobe {nprobe})", unit="query"):
            t = time.perf_counter()
            _, ids = index.search(one(i), 100, at_nprobe)
            latency.append(time.perf_counter() - t)
            found.append(ids[0])
        runs[nprobe] = (np.percentile(latency, [50, 99]) * 1e3, np.stack(found))
    rss = peak_rss_gb()
    t = time.perf_counter()
    exact, global_rank = exact_top(world, queries, args.gallery, 10)
    exact_s = time.perf_counter() - t
    sweep = {
        n: (*ms.round(2).tolist(), *np.round(agreement(found, exact), 4).tolist()) for n, (ms, found) in runs.items()
    }
    chosen = next(iter(runs))
    build = timer["train"] + timer["add"] + timer["save"]
    return {
        "gallery": args.gallery,
        "build_s": round(build, 1),
        "p50_ms": sweep[chosen][0],
        "p99_ms": sweep[chosen][1],
        "recall_at_10": sweep[chosen][2],
        "map_vs_exact": sweep[chosen][3],
        "peak_rss_gb": round(rss, 2),
        "details": {
            "peak_rss_build_gb": round(rss_build, 2),
            "queries": args.queries,
            "identities": num_identities,
            "dim": args.dim,
            "sweep": sweep,
            "global_rank_p99": int(np.percentile(global_rank, 99)),
            "global_rank_max": int(global_rank.max()),
            "index": index.manifest["index"],
            "shortlist": config.shortlist,
            "nprobe": chosen,
            "local_dtype": config.local_dtype,
            "generate_s": round(timer["generate"], 1),
            "train_s": round(timer["train"], 1),
            "add_s": round(timer["add"], 1),
            "save_s": round(timer["save"], 1),
            "exact_reference_s": round(exact_s, 1),
            "index_bytes": sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)),
        },
    }


def table(r: dict) -> str:
    d = r["details"]
    rows = [
        ("gallery images / identities", f"{r['gallery']:,} / {d['identities']:,}"),
        ("index", f"{d['index']}, nprobe {d['nprobe']}, shortlist {d['shortlist']}, stripes {d['local_dtype']}"),
        ("build s (train + add + save)", f"{r['build_s']:,.1f} ({d['train_s']} + {d['add_s']} + {d['save_s']})"),
        ("index on disk GB", f"{d['index_bytes'] / 1e9:.2f}"),
        ("latency p50 / p99 ms (one query)", f"{r['p50_ms']} / {r['p99_ms']}"),
        ("recall@10 vs exact global+lsa", f"{r['recall_at_10']:.4f}"),
        ("AP vs exact top 10", f"{r['map_vs_exact']:.4f}"),
        (
            "peak RSS GB: to the end of the build / of the queries",
            f"{d['peak_rss_build_gb']:.2f} / {r['peak_rss_gb']:.2f}",
        ),
        (
            "global rank of the exact top 10, p99 / max (the shortlist must reach it)",
            f"{d['global_rank_p99']:,} / {d['global_rank_max']:,}",
        ),
        (
            "feature generation s / exact reference s (not in the above)",
            f"{d['generate_s']} / {d['exact_reference_s']}",
        ),
    ]
    rows += [
        (f"nprobe {n}: p50 / p99 ms, recall@10, AP", f"{a} / {b}, {c:.4f}, {e:.4f}")
        for n, (a, b, c, e) in d["sweep"].items()
    ]
    head = (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, {d['queries']} queries, dim {d['dim']}"
    )
    return "\n".join([head, "", "| measurement | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.large_gallery", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=int, default=1_000_000, help="gallery images")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--checkpoint", default="runs/synthetic", help="trained run whose features are the source")
    ap.add_argument("--workdir", default=os.path.join("runs", "large_gallery"), help="index and source cache")
    ap.add_argument("--dim", type=int, default=256, help="global and stripe feature size (§3.1: 256)")
    ap.add_argument("--per-identity", type=int, default=20, help="mean gallery images per identity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the index folder")
    ap.add_argument(
        "--sweep-nprobe",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="also time and score these nprobe values on the same index, e.g. 128,256",
    )
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object, last")
    for key, kind in (("index", str), ("nlist", int), ("nprobe", int), ("shortlist", int), ("local_dtype", str)):
        ap.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=kind,
            default=None,
            help=f"override retrieval.{key} of gldfa_jax/config.py",
        )
    args = ap.parse_args(argv)
    if args.gallery < 1 or args.queries < 1 or args.per_identity < 1:
        ap.error(
            f"--gallery, --queries and --per-identity must be >= 1, got {args.gallery}, {args.queries}, "
            f"{args.per_identity}"
        )
    if not os.path.isdir(args.checkpoint) and not os.path.exists(os.path.join(args.workdir, "source_features.npz")):
        ap.error(
            f"--checkpoint {args.checkpoint} does not exist: train it first with README command 1 "
            "(python -m gldfa_jax.main --config experiments/synthetic.py)."
        )
    result = run(args)
    if not args.keep:
        shutil.rmtree(os.path.join(args.workdir, f"index_{args.gallery}"), ignore_errors=True)
    print(table(result))
    if args.json:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in ("gallery", "build_s", "p50_ms", "p99_ms", "recall_at_10", "map_vs_exact", "peak_rss_gb")
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
