"""Ranking evaluation: CMC, mAP and mINP under the Market-1501 protocol, and CUHK03 single-shot.

Protocol (shared by the re-ID toolboxes): for each query, gallery images with the same identity
AND the same camera are removed; distractors (pid 0) stay as ordinary wrong matches; queries
with no remaining correct match are skipped. CMC[r] is the fraction of the remaining queries
whose first correct match is within rank r + 1; AP is the mean precision at each correct match
(non-interpolated); INP = (number of correct matches) / (rank of the last one) (Ye et al. 2021).

Ties in distance are ranked by gallery index (a stable sort), so results are deterministic.
Queries are processed in blocks; each block is sorted once, vectorised over its queries.
"""
from typing import Mapping

import numpy as np
from tqdm.auto import tqdm

from gldfa_jax import distances as distances_lib

_INDEX_BITS = np.uint64(32)
_REMOVED = np.uint64(np.iinfo(np.uint64).max)
_BLOCK_ELEMENTS = 4_000_000  # query rows per block ≈ this / gallery size


def _labels(name: str, a, length: int | None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {a.shape}.")
    if not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}.")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} has {a.shape[0]} entries but the distance matrix needs {length} "
                         "(one per query row / gallery column).")
    return a.astype(np.int64)


def _check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids):
    return (_labels("q_pids", q_pids, num_q), _labels("g_pids", g_pids, num_g),
            _labels("q_camids", q_camids, num_q), _labels("g_camids", g_camids, num_g))


def _check_max_rank(max_rank):
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}.")


def _ranked_gallery(dist: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Gallery indices of each row sorted by (distance, index), removed items last; -1 marks them.

    Sorting packed 64-bit keys (order-preserving float32 bits << 32 | index) is a stable,
    tie-deterministic argsort several times faster than np.argsort(kind="stable").
    """
    if dist.dtype != np.float32 or dist.shape[1] >= 2**32:
        order = np.argsort(dist, axis=1, kind="stable")
        keep = ~np.take_along_axis(removed, order, 1)
        # Move removed items to the end while keeping the order of the others.
        order = np.take_along_axis(order, np.argsort(~keep, axis=1, kind="stable"), 1)
        return np.where(np.sort(~keep, axis=1), -1, order)
    bits = (dist + np.float32(0.0)).view(np.uint32)  # + 0.0 maps -0.0 to +0.0
    flip = np.where(bits >> 31, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
    keys = (bits ^ flip).astype(np.uint64) << _INDEX_BITS
    keys |= np.arange(dist.shape[1], dtype=np.uint64)
    keys[removed] = _REMOVED
    keys.sort(axis=1)
    order = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    order[keys == _REMOVED] = -1
    return order


def _block_metrics(dist, q_pids, q_camids, g_pids, g_camids, single_shot_rng=None, repeats=10):
    """Per-query (valid, first-hit rank [0-based], AP, INP) for one block [b, G] of distances."""
    dist = np.asarray(dist)
    if dist.dtype in (np.float16,) or str(dist.dtype) == "bfloat16":
        dist = dist.astype(np.float32)
    same_pid = g_pids[None, :] == q_pids[:, None]
    removed = same_pid & (g_camids[None, :] == q_camids[:, None])
    order = _ranked_gallery(dist, removed)
    kept = order >= 0
    hits = kept & (g_pids[np.maximum(order, 0)] == q_pids[:, None])
    num_rel = hits.sum(1)
    valid = num_rel > 0
    rows, cols = np.nonzero(hits)  # row-major: hits of one query in rank order
    starts = np.concatenate([[0], np.cumsum(num_rel)[:-1]])
    nth_hit = np.arange(rows.size) - starts[rows] + 1
    ap = np.bincount(rows, nth_hit / (cols + 1.0), minlength=dist.shape[0]).astype(np.float64)
    ap = np.divide(ap, num_rel, out=np.zeros_like(ap), where=valid)
    first = np.where(valid, hits.argmax(1), 0)
    last = hits.shape[1] - 1 - hits[:, ::-1].argmax(1)
    inp = np.where(valid, num_rel / (last + 1.0), 0.0)
    if single_shot_rng is not None:
        first = _single_shot_first_ranks(order, kept, hits, g_pids, single_shot_rng, repeats)
    return valid, first, ap, inp


def _single_shot_first_ranks(order, kept, hits, g_pids, rng, repeats):
    """CUHK03 classic: one random gallery image per identity, `repeats` times.

    Returns [b, repeats] first-hit ranks (0-based) in each sampled gallery; with one image per
    identity the only sampled correct match is the query identity's draw.
    """
    num_q, num_g = order.shape
    _, ident = np.unique(g_pids, return_inverse=True)
    ranked_ident = np.where(kept, ident[np.maximum(order, 0)], -1)
    out = np.zeros((num_q, repeats), np.int64)
    for q in range(num_q):
        ids = ranked_ident[q][kept[q]]
        is_hit = hits[q][kept[q]]
        if not is_hit.any():
            continue
        # Identity groups in rank order; a draw is the item with the largest random key per group.
        group_order = np.argsort(ids, kind="stable")
        sorted_ids = ids[group_order]
        group_start = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        keys = rng.random((repeats, ids.size))[:, group_order]
        group_max = np.maximum.reduceat(keys, group_start, axis=1)
        group_of = np.repeat(np.arange(group_start.size), np.diff(np.r_[group_start, ids.size]))
        chosen_sorted = keys == group_max[:, group_of]
        chosen = np.zeros_like(chosen_sorted)
        chosen[:, group_order] = chosen_sorted
        rank_among_chosen = np.cumsum(chosen, axis=1) - 1
        out[q] = np.where(chosen & is_hit[None, :], rank_among_chosen, num_g).min(1)
    return out


class _RankAccumulator:
    """Sums per-query metrics over blocks so a full [Q, G] matrix is never needed."""

    def __init__(self, max_rank, single_shot, repeats):
        self.max_rank, self.single_shot, self.repeats = max_rank, single_shot, repeats
        self.hit_counts = np.zeros(max_rank, np.float64)
        self.ap_sum = self.inp_sum = 0.0
        self.num_valid = 0

    def add(self, valid, first, ap, inp):
        ranks = np.arange(self.max_rank)
        if self.single_shot:
            within = (first[valid][:, :, None] <= ranks).mean(1)
        else:
            within = first[valid][:, None] <= ranks
        self.hit_counts += within.sum(0)
        self.ap_sum += ap[valid].sum()
        self.inp_sum += inp[valid].sum()
        self.num_valid += int(valid.sum())

    def result(self) -> dict:
        if self.num_valid == 0:
            raise ValueError("no query has a correct match in the gallery (after removing same-identity "
                             "same-camera images); check q_pids/g_pids and q_camids/g_camids.")
        return {"cmc": self.hit_counts / self.num_valid, "mAP": self.ap_sum / self.num_valid,
                "mINP": self.inp_sum / self.num_valid, "num_valid_queries": self.num_valid}


def _check_single_shot(cuhk03_single_shot, repeats, seed):
    if cuhk03_single_shot and (isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer))
                               or repeats < 1):
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
    return np.random.default_rng(seed) if cuhk03_single_shot else None


def rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                 cuhk03_single_shot: bool = False, repeats: int = 10, seed: int = 0,
                 block_size: int | None = None) -> dict:
    """CMC [max_rank], mAP, mINP (fractions) and the number of evaluated queries.

    distmat [Q, G] (numpy or jax). cuhk03_single_shot: the CUHK03 classic protocol — CMC averaged
    over `repeats` draws of one gallery image per identity (seeded; mAP/mINP use the full gallery).
    CMC always has max_rank entries; ranks beyond a short gallery read 1.0 for evaluated queries.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be [num_query, num_gallery], got shape {distmat.shape}.")
    if 0 in distmat.shape:
        raise ValueError(f"distmat {distmat.shape} is empty: need at least one query and one gallery image.")
    if not np.issubdtype(distmat.dtype, np.floating) and str(distmat.dtype) != "bfloat16":
        raise ValueError(f"distmat must hold floating-point distances, got dtype {distmat.dtype}.")
    if np.isnan(distmat).any():
        raise ValueError("distmat contains NaN; rankings would be undefined.")
    _check_max_rank(max_rank)
    labels = _check_labels(*distmat.shape, q_pids, g_pids, q_camids, g_camids)
    q_pids, g_pids, q_camids, g_camids = labels
    rng = _check_single_shot(cuhk03_single_shot, repeats, seed)
    rows = block_size or max(1, _BLOCK_ELEMENTS // max(distmat.shape[1], 1))
    acc = _RankAccumulator(max_rank, cuhk03_single_shot, repeats)
    for start in range(0, distmat.shape[0], rows):
        sl = slice(start, start + rows)
        acc.add(*_block_metrics(distmat[sl], q_pids[sl], q_camids[sl], g_pids, g_camids, rng, repeats))
    return acc.result()


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  **options) -> tuple[np.ndarray, float]:
    """Market-1501 protocol: distmat [Q, G] -> (cmc [max_rank] float64, mAP), both fractions.

    Options are those of `rank_metrics` (mINP and CUHK03 single-shot live there).
    """
    result = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, **options)
    return result["cmc"], result["mAP"]


def evaluate_features(q_feats: Mapping, g_feats: Mapping, q_pids, g_pids, q_camids, g_camids,
                      mode: str, window: int | None = None, block_size: int = 2048,
                      max_rank: int = 50, cuhk03_single_shot: bool = False, repeats: int = 10,
                      seed: int = 0, progress: bool = False, normalize: bool = False,
                      lsa_weight: float = 1.0) -> dict:
    """Rank metrics straight from features: one [block_size, G] distance block at a time.

    Returns {"cmc" [max_rank], "mAP", "mINP", "num_valid_queries"} (fractions), identical to
    `rank_metrics(pairwise_distance(...), ...)`.
    """
    num_q, num_g = distances_lib.validate_features(q_feats, g_feats, mode)
    _check_max_rank(max_rank)
    q_pids, g_pids, q_camids, g_camids = _check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids)
    rng = _check_single_shot(cuhk03_single_shot, repeats, seed)
    acc = _RankAccumulator(max_rank, cuhk03_single_shot, repeats)
    blocks = distances_lib.iter_distance_blocks(q_feats, g_feats, mode, window, block_size, normalize=normalize,
                                                lsa_weight=lsa_weight)
    for rows, block in tqdm(blocks, total=-(-num_q // block_size), desc=f"evaluate ({mode})",
                            unit="block", disable=not progress):
        # Sort in sub-blocks: the packed sort keys are 2× the size of the distance block.
        step = max(1, _BLOCK_ELEMENTS // max(num_g, 1))
        for sub in range(0, block.shape[0], step):
            sl = slice(rows.start + sub, min(rows.start + sub + step, rows.stop))
            acc.add(*_block_metrics(block[sub:sub + step], q_pids[sl], q_camids[sl], g_pids, g_camids,
                                    rng, repeats))
    return acc.result()


def separation(dist, q_pids, g_pids, q_camids, g_camids) -> dict:
    """How well a distance separates people, under the protocol's filter (same id and camera removed).

    Returns {"pos", "neg", "neg_std", "ratio"}: mean distance to true matches, mean and std to other
    identities, and pos / neg (1 = no separation; scale-free, so distances of different scales compare).
    Accumulated in float64 over blocks of queries, so a [Q, G] matrix is never copied whole.
    """
    dist = np.asarray(dist)
    q_pids, g_pids, q_camids, g_camids = _check_labels(*dist.shape, q_pids, g_pids, q_camids, g_camids)
    sums = np.zeros(5)  # positives: count, sum; negatives: count, sum, sum of squares
    step = max(1, _BLOCK_ELEMENTS // max(dist.shape[1], 1))
    for start in range(0, dist.shape[0], step):
        d = dist[start:start + step].astype(np.float64)
        same = q_pids[start:start + step, None] == g_pids[None, :]
        pos = same & (q_camids[start:start + step, None] != g_camids[None, :])
        neg = d[~same]
        sums += (pos.sum(), d[pos].sum(), neg.size, neg.sum(), np.square(neg).sum())
    if sums[0] == 0 or sums[2] == 0:
        raise ValueError("separation needs at least one true match and one other identity in the gallery.")
    mean_pos, mean_neg = sums[1] / sums[0], sums[3] / sums[2]
    neg_std = np.sqrt(max(sums[4] / sums[2] - mean_neg ** 2, 0.0))
    return {"pos": float(mean_pos), "neg": float(mean_neg), "neg_std": float(neg_std),
            "ratio": float(mean_pos / mean_neg)}
