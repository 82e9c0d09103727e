"""Retrieval benchmark: LSA vs Euclidean distances, rank evaluation vs the per-query loop,
re-ranking dense vs memory-lean, and a whole evaluation from features (evaluation.evaluate,
as training runs it). Prints one markdown table measured in this run.

    python -m benchmarks.retrieval [--scale market|small|msmt17] [--evaluation-only]

Baselines are the naive references the tests check against (benchmarks/references.py); --scale msmt17
(11,659 × 82,161) skips them (the per-query loop would take hours, the dense re-ranking needs ≥ 131 GiB) and
measures everything else at that size. Memory is the peak resident set size above the value at the start of each
measurement (sampled every 10 ms from /proc after malloc_trim), so it includes XLA's buffers; the notes give the
process's own peak.
"""

import argparse
import ctypes
import gc
import os
import platform
import threading
import time
from types import SimpleNamespace

import numpy as np
from tqdm.auto import tqdm

from benchmarks.references import reference_market_loop, reference_re_ranking
from gldfa_jax import distances, evaluation, ranking, rerank
from gldfa_jax.config import get_config

SCALES = {
    # Market-1501 test set: 3,368 queries, 19,732 gallery, 751 identities, 6 cameras; k = 8, d = 256.
    "market": dict(
        num_q=3368,
        num_g=19732,
        ids=751,
        cams=6,
        rounds=3,
        rerank_dense=(400, 3600),
        rerank_lean=((400, 3600), (1000, 9000), (2000, 18000)),
    ),
    "small": dict(
        num_q=300, num_g=1500, ids=100, cams=6, rounds=3, rerank_dense=(100, 500), rerank_lean=((100, 500), (200, 1000))
    ),
    # MSMT17 test set: 11,659 queries, 82,161 gallery, 3,060 identities, 15 cameras. No baselines (see above),
    # one distance round (each takes minutes).
    "msmt17": dict(num_q=11659, num_g=82161, ids=3060, cams=15, rounds=1, rerank_dense=None, rerank_lean=()),
}
K, D = 8, 256


class PeakMemory:
    """Peak resident-set growth (bytes) of a block, sampled every 10 ms (sees numpy and XLA
    buffers alike; tracemalloc would miss XLA and slow the Python loop baselines down)."""

    def __init__(self, interval=0.01):
        self.interval, self.peak = interval, 0

    @staticmethod
    def rss():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: RSS growth unavailable, tracemalloc alone
            return 0

    def _watch(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def _sample(self):
        rss = self.rss()
        if rss > self.top:
            self.top_at = time.time()  # wall clock, to match a log's timestamps
        self.peak, self.top = max(self.peak, rss - self.start), max(self.top, rss)

    def __enter__(self):
        gc.collect()
        try:  # hand freed heap pages back so RSS growth is not hidden by memory reuse
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.start, self._stop = self.rss(), threading.Event()
        self.top, self.top_at = self.start, time.time()  # the process's own peak during the block, and when
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self._sample()


def features(rng, pids_list, dims, noise=1.0):
    """Identity-clustered features (shared centre + noise) so rankings are meaningful."""
    centres = rng.normal(size=(max(int(p.max()) for p in pids_list) + 1,) + dims).astype(np.float32)
    return [centres[p] + noise * rng.normal(size=(p.size,) + dims).astype(np.float32) for p in pids_list]


def labels(rng, num_q, num_g, ids, cams):
    q_pids = rng.integers(1, ids + 1, num_q)
    g_pids = np.concatenate([rng.integers(1, ids + 1, num_g - num_g // 7), np.zeros(num_g // 7, int)])
    return q_pids, g_pids, rng.integers(0, cams, num_q), rng.integers(0, cams, num_g)


def synthetic_split(num_q: int, num_g: int, ids: int, cams: int, keys: tuple) -> tuple:
    """Identity-clustered features of Market's shapes (global [N, 256], local [N, 8, 256], final [N, 2304]; only
    `keys`) -> (q_feats, g_feats, query, gallery), query/gallery with .pids/.camids; gallery distractors (pid 0)
    in clusters of their own."""
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = labels(rng, num_q, num_g, ids, cams)
    g_feat_pids = np.where(g_pids == 0, rng.integers(ids + 1, 2 * ids, num_g), g_pids)  # distractors: own clusters
    dims = {"global": (D,), "local": (K, D), "final": ((K + 1) * D,)}
    q_feats, g_feats = {}, {}
    for key in keys:
        q_feats[key], g_feats[key] = features(rng, [q_pids, g_feat_pids], dims[key], noise=2.5)
    return (
        q_feats,
        g_feats,
        SimpleNamespace(pids=q_pids, camids=q_cams),
        SimpleNamespace(pids=g_pids, camids=g_cams),
    )


def mib(n_bytes):
    return f"{n_bytes / 2**20:,.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="market")
    parser.add_argument(
        "--evaluation-only",
        action="store_true",
        help="only the last row, a whole evaluation from features (msmt17: ~30 min instead of ~2 h)",
    )
    args = parser.parse_args(argv)
    s = SCALES[args.scale]
    baselines = s["rerank_dense"] is not None
    num_q, num_g = s["num_q"], s["num_g"]
    # 2,304-d final feature = global (256) + 8 stripes (256 each), concatenated.
    q, g, query, gallery = synthetic_split(num_q, num_g, s["ids"], s["cams"], ("local", "final", "global"))
    q_pids, g_pids, q_cams, g_cams = query.pids, gallery.pids, query.camids, gallery.camids
    rank_kw = dict(q_pids=q_pids, g_pids=g_pids, q_camids=q_cams, g_camids=g_cams)
    rows, notes = [], []
    size = f"{num_q:,} × {num_g:,}"
    rounds = s["rounds"]
    components = 0 if args.evaluation_only else 2 * rounds + 2 + (3 + len(s["rerank_lean"]) if baselines else 0)
    steps = tqdm(total=components + 1, desc="benchmark", unit="step")

    def run(fn, **kw):
        with PeakMemory() as m:
            out = fn(**kw)
        steps.update(1)
        return out, m

    def process_peak(m):
        return f"process peak {mib(m.top)} MiB"

    if not args.evaluation_only:  # the component rows; the whole evaluation below always runs
        # 1. Distances, alternating the two modes so background load hits both alike; the reported
        # time is the best round (the first also compiles, which can only make it slower).
        names = {"final": "Euclidean, 2,304-d final feature", "lsa": "LSA, k = 8, d = 256, W = 4"}
        times, peaks = {m: [] for m in names}, {m: 0 for m in names}
        for round_ in range(rounds):
            for mode in names:
                dist = None  # the previous round's matrix goes before the next one is measured
                dist, m = run(
                    distances.pairwise_distance, q_feats=q, g_feats=g, mode=mode, progress=round_ == rounds - 1
                )
                times[mode].append(m.seconds)
                peaks[mode] = max(peaks[mode], m.peak)
        best = {m: min(t) for m, t in times.items()}
        for mode, name in names.items():
            first = f" (first call {times[mode][0]:.2f})" if rounds > 1 else ""
            rows.append(("distance matrix", name, size, f"{best[mode]:.2f}{first}", mib(peaks[mode]), ""))
        rows[-1] = rows[-1][:5] + (f"LSA / Euclidean = {best['lsa'] / best['final']:.2f}× (target ≤ 5×)",)

        # 2. Ranking evaluation on the LSA distances.
        result, fast = run(ranking.rank_metrics, distmat=dist, **rank_kw)
        fast_note = process_peak(fast)
        if baselines:
            (ref_cmc, ref_map, ref_inp), loop = run(reference_market_loop, distmat=dist, progress=True, **rank_kw)
            diff = max(
                np.abs(result["cmc"] - ref_cmc).max(), abs(result["mAP"] - ref_map), abs(result["mINP"] - ref_inp)
            )
            rows.append(
                (
                    "CMC/mAP/mINP",
                    "per-query numpy loop (toolbox protocol)",
                    size,
                    f"{loop.seconds:.2f}",
                    mib(loop.peak),
                    "",
                )
            )
            fast_note = f"{loop.seconds / fast.seconds:.0f}× faster (target ≥ 20×); max |Δ| = {diff:.1e}"
        rows.append(
            (
                "CMC/mAP/mINP",
                "`rank_metrics` (vectorised, blocked, host)",
                size,
                f"{fast.seconds:.2f}",
                mib(fast.peak),
                fast_note,
            )
        )
        notes.append(
            f"LSA ranking on the synthetic features: mAP {100 * result['mAP']:.1f}%, "
            f"rank-1 {100 * result['cmc'][0]:.1f}%."
        )
        del dist

        # 3. Re-ranking: dense original algorithm vs the sparse/blocked paths, then lean-only sizes.
        if baselines:
            rows += rerank_baselines(s, run)
        else:
            notes.append(
                "No baselines at msmt17: the per-query loop takes ~45× the vectorised ranking (hours), and the "
                "dense re-ranking needs ≥ 16·N² bytes = 131 GiB."
            )

        # 4. Lean re-ranking of global+lsa at full size from its q×g matrix, each block ranked as it comes (what
        # the evaluation does; the q×g matrix is the evaluation's, computed before the measurement).
        q_g = distances.pairwise_distance(q, g, "global+lsa", progress=True)
        plain = ranking.rank_metrics(q_g, **rank_kw)

        def lean_rerank():
            ranker = ranking.Ranker(**rank_kw)
            for block_rows, block in rerank.re_ranking_blocks(q, g, "global+lsa", q_g, progress=True):
                ranker.add(block_rows, block)
            return ranker.result()

        reranked, lean = run(lean_rerank)
        del q_g
        rows.append(
            (
                "re-ranking",
                "`re_ranking_blocks`, global + LSA, blocks ranked as they come",
                f"{size} (N = {num_q + num_g:,})",
                f"{lean.seconds:.2f}",
                mib(lean.peak),
                f"mAP {100 * plain['mAP']:.1f}% → {100 * reranked['mAP']:.1f}%; {process_peak(lean)}",
            )
        )

    # 5. A whole evaluation from features, through the code path of training's final evaluation.
    options = evaluation.EvalOptions.from_config(get_config())
    evaluated, whole = run(evaluation.evaluate, q_feats=q, g_feats=g, query=query, gallery=gallery, options=options)
    results = evaluated.results
    rows.append(
        (
            "evaluation from features",
            "`evaluation.evaluate`: global, lsa, global+lsa, final + global+lsa re-ranked",
            size,
            f"{whole.seconds:.2f}",
            mib(whole.peak),
            "mAP " + ", ".join(f"{m} {r['mAP']:.1f}%" for m, r in results.items()) + f"; {process_peak(whole)}",
        )
    )
    steps.close()

    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"python {platform.python_version()}; scale {args.scale!r}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print()
    print("| Task | Implementation | Size (Q × G) | Time (s) | Peak memory (MiB) | Notes |")
    print("|---|---|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    notes.append(
        "Memory: peak RSS above the start of each measurement (includes the output matrix); the "
        "re-ranking row starts with the global+lsa [Q, G] matrix and the features already in memory."
    )
    if not args.evaluation_only:
        all_rounds = (
            f"; all rounds: Euclidean {', '.join(f'{t:.2f}' for t in times['final'])} s, "
            f"LSA {', '.join(f'{t:.2f}' for t in times['lsa'])} s"
            if rounds > 1
            else ""
        )
        notes.append(f"Distance times: best of {rounds} round(s) (Euclidean and LSA alternating){all_rounds}.")
    for note in notes:
        print(f"- {note}")


def rerank_baselines(s, run) -> list:
    """Table rows: the dense original re-ranking against `re_ranking` and the lean path, then lean-only sizes."""

    def rr_feats(nq, ng):
        r = np.random.default_rng(nq + ng)
        pq, pg = r.integers(0, max(nq // 4, 2), nq), r.integers(0, max(nq // 4, 2), ng)
        fq, fg = features(r, [pq, pg], (D,), noise=2.5)
        return {"global": fq}, {"global": fg}

    rows = []
    nq, ng = s["rerank_dense"]
    fq, fg = rr_feats(nq, ng)
    inputs = dict(
        q_g_dist=distances.pairwise_distance(fq, fg, "global"),
        q_q_dist=distances.pairwise_distance(fq, fq, "global"),
        g_g_dist=distances.pairwise_distance(fg, fg, "global"),
    )
    dense_out, dense = run(reference_re_ranking, **inputs)
    exact_out, exact = run(rerank.re_ranking, **inputs)
    del inputs
    rr_size = f"{nq:,} × {ng:,} (N = {nq + ng:,})"
    rows.append(
        (
            "re-ranking",
            "dense original algorithm (N × N matrices)",
            rr_size,
            f"{dense.seconds:.2f}",
            mib(dense.peak),
            "",
        )
    )
    rows.append(
        (
            "re-ranking",
            "`re_ranking` (dense inputs, sparse V)",
            rr_size,
            f"{exact.seconds:.2f}",
            mib(exact.peak),
            f"max |Δ| vs dense = {np.abs(exact_out - dense_out).max():.1e}",
        )
    )
    for nq, ng in tqdm(s["rerank_lean"], desc="lean re-ranking sizes", unit="size"):
        fq, fg = rr_feats(nq, ng)
        lean_out, lean = run(rerank.re_ranking_features, q_feats=fq, g_feats=fg, mode="global", progress=True)
        extra = ""
        if (nq, ng) == s["rerank_dense"]:
            extra = f"max |Δ| vs dense = {np.abs(lean_out - dense_out).max():.1e}"
        rows.append(
            (
                "re-ranking",
                "`re_ranking_features` (lean, blocked)",
                f"{nq:,} × {ng:,} (N = {nq + ng:,})",
                f"{lean.seconds:.2f}",
                mib(lean.peak),
                extra,
            )
        )
        del lean_out
    return rows


if __name__ == "__main__":
    main()
