"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), exact and memory-lean.

Both entry points return what the authors' original Python `re_ranking` returns for the same
distances. Like it, they first SQUARE the distances and divide each column of the (query+gallery)
× (query+gallery) matrix by its maximum, so the λ-weighted "original distance" term of the final
matrix is that normalised squared distance, not the raw input (feed Euclidean distances, not
squared ones, to get the published behaviour).

Steps: k1-nearest neighbours → k-reciprocal sets, expanded by the k-reciprocal sets
(k = round(k1/2)) of their members when 2/3 of those lie inside → Gaussian weights V (exp(-d),
row-normalised) → local query expansion (mean of V over the k2 nearest neighbours) → Jaccard
distance Σ min(V_q, V_g) → final = jaccard · (1 − λ) + original · λ.

Here V is a sparse matrix (a few dozen non-zeros per row) instead of the original's dense N × N
float32 matrices, and the neighbour lists, weights and Jaccard sums are computed block by block,
so `re_ranking_features` never holds more than one [block, N] slice of the distance matrix.
"""
from typing import Callable, Mapping

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from gldfa_jax import distances as distances_lib

_PAIR_BUDGET = 4_000_000  # (query, gallery) min-pairs expanded at once in the Jaccard step
_BLOCK_BYTES = 2**29      # budget for one [block, N] slice of distances plus its argsort


def _check_params(k1, k2, lambda_value):
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r} (Zhong et al.: k1=20, k2=6).")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value!r} (Zhong et al.: 0.3).")


def _neighbours(rows: Callable, num_all: int, width: int, block: int, progress: bool) -> np.ndarray:
    """The first `width` columns of argsort(O) [N, width], one row block at a time.

    A full np.argsort per row (not argpartition) keeps tie order identical to the original.
    """
    out = np.empty((num_all, width), np.int64)
    for start in tqdm(range(0, num_all, block), desc="re-rank: neighbours", unit="block",
                      disable=not progress):
        stop = min(start + block, num_all)
        out[start:stop] = np.argsort(rows(start, stop), axis=1)[:, :width]
    return out


def _expanded_sets(ranks: np.ndarray, rows_idx: np.ndarray, k1: int, recip_half: np.ndarray):
    """Expanded k-reciprocal sets of the rows `rows_idx` as (row, column) pairs, sorted, unique."""
    forward = ranks[rows_idx, :k1 + 1]                          # [b, k1+1]
    backward = ranks[forward, :k1 + 1]                          # [b, k1+1, k1+1]
    in_set = (backward == rows_idx[:, None, None]).any(-1)       # k-reciprocal members
    half = ranks[:, :recip_half.shape[1]]
    cand = half[forward]                                         # [b, k1+1, k/2+1]
    cand_ok = recip_half[forward]                                # candidate's own half-size set
    inside = ((cand[..., None] == forward[:, None, None, :]) & in_set[:, None, None, :]).any(-1)
    overlap = (inside & cand_ok).sum(-1)
    size = cand_ok.sum(-1)
    take = in_set & (overlap > 2.0 / 3 * size)                   # original: > 2/3 of the candidate set
    added = take[..., None] & cand_ok
    pair_rows = np.concatenate([np.broadcast_to(rows_idx[:, None], forward.shape)[in_set],
                                np.broadcast_to(rows_idx[:, None, None], cand.shape)[added]])
    pair_cols = np.concatenate([forward[in_set], cand[added]])
    keys = np.unique(pair_rows * ranks.shape[0] + pair_cols)
    return keys // ranks.shape[0], keys % ranks.shape[0]


def _reciprocal_half(ranks: np.ndarray, k_half: int) -> np.ndarray:
    """[N, k_half+1] mask: is column j of row i's k_half+1 neighbours k-reciprocal with i."""
    half = ranks[:, :k_half + 1]
    return (half[half] == np.arange(ranks.shape[0])[:, None, None]).any(-1)


def _weights(rows: Callable, ranks, k1, num_all, block, progress) -> scipy.sparse.csr_matrix:
    """Sparse V [N, N]: exp(-O) over each expanded set, normalised to sum 1 per row."""
    recip_half = _reciprocal_half(ranks, int(np.around(k1 / 2.0)))
    all_rows, all_cols, all_vals = [], [], []
    for start in tqdm(range(0, num_all, block), desc="re-rank: k-reciprocal sets", unit="block",
                      disable=not progress):
        stop = min(start + block, num_all)
        r, c = _expanded_sets(ranks, np.arange(start, stop), k1, recip_half)
        w = np.exp(-rows(start, stop)[r - start, c])
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        totals = np.add.reduceat(w, starts)
        w = w / np.repeat(totals, np.diff(np.r_[starts, r.size]))
        all_rows.append(r)
        all_cols.append(c)
        all_vals.append(w.astype(np.float32))
    return scipy.sparse.csr_matrix(
        (np.concatenate(all_vals), (np.concatenate(all_rows), np.concatenate(all_cols))),
        shape=(num_all, num_all), dtype=np.float32)


def _query_expansion(v: scipy.sparse.csr_matrix, ranks: np.ndarray, k2: int) -> scipy.sparse.csr_matrix:
    """V_qe[i] = mean of V over the k2 nearest neighbours of i (original skips this for k2 = 1)."""
    if k2 == 1:
        return v
    num_all, width = ranks.shape[0], min(k2, ranks.shape[1])
    pick = scipy.sparse.csr_matrix(
        (np.ones(num_all * width, np.float32),
         (np.repeat(np.arange(num_all), width), ranks[:, :width].ravel())), shape=(num_all, num_all))
    v_qe = (pick @ v).tocsr()
    v_qe.data = (v_qe.data / np.float32(width)).astype(np.float32)
    return v_qe


def _final(rows: Callable, v, num_query, lambda_value, block, progress) -> np.ndarray:
    """final = jaccard · (1 − λ) + O · λ for the query rows, gallery columns [Q, G]."""
    num_all = v.shape[0]
    num_gallery = num_all - num_query
    by_column = v[num_query:].T.tocsr()  # column j of V -> the gallery rows where it is non-zero
    col_count = np.diff(by_column.indptr)
    vq = v[:num_query].tocsr()
    cum_pairs = np.r_[0, np.cumsum(col_count[vq.indices])]
    pairs_per_query = cum_pairs[vq.indptr[1:]] - cum_pairs[vq.indptr[:-1]]
    out = np.empty((num_query, num_gallery), np.float32)
    for start in tqdm(range(0, num_query, block), desc="re-rank: Jaccard", unit="block",
                      disable=not progress):
        stop = min(start + block, num_query)
        temp = np.empty((stop - start, num_gallery), np.float32)
        lo = start
        while lo < stop:  # sub-blocks bounded by the number of expanded pairs
            cum = np.cumsum(pairs_per_query[lo:stop])
            hi = lo + max(1, int(np.searchsorted(cum, _PAIR_BUDGET, side="right")))
            temp[lo - start:hi - start] = _min_sums(vq[lo:hi], by_column, col_count, num_gallery)
            lo = hi
        jaccard = 1 - temp / (2.0 - temp)
        out[start:stop] = jaccard * (1 - lambda_value) + rows(start, stop)[:, num_query:] * lambda_value
    return out


def _min_sums(sub, by_column, col_count, num_gallery) -> np.ndarray:
    """Σ_j min(V[q, j], V[g, j]) for the query rows in `sub` and every gallery row g."""
    entry_row = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    counts = col_count[sub.indices]
    first = np.repeat(by_column.indptr[sub.indices], counts)
    at = first + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    mins = np.minimum(np.repeat(sub.data, counts), by_column.data[at])
    sums = np.bincount(np.repeat(entry_row, counts) * num_gallery + by_column.indices[at], mins,
                       minlength=sub.shape[0] * num_gallery)
    return sums.reshape(sub.shape[0], num_gallery)


def _rerank(rows: Callable, num_query: int, num_all: int, k1, k2, lambda_value, block, progress):
    ranks = _neighbours(rows, num_all, min(num_all, max(k1 + 1, k2)), block, progress)
    v = _query_expansion(_weights(rows, ranks, k1, num_all, block, progress), ranks, k2)
    return _final(rows, v, num_query, lambda_value, block, progress)


def _auto_block(num_all: int) -> int:
    return int(max(16, _BLOCK_BYTES // (16 * max(num_all, 1))))


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked distances [Q, G] float32 from q_g_dist [Q, G], q_q_dist [Q, Q], g_g_dist [G, G].

    Same result as Zhong et al.'s original code (inputs squared, columns divided by their maximum;
    see the module docstring). Needs the dense (Q+G)² input like the original, but its own work
    arrays are sparse; use `re_ranking_features` when that matrix itself does not fit.
    """
    q_g, q_q, g_g = (np.asarray(a) for a in (q_g_dist, q_q_dist, g_g_dist))
    _check_params(k1, k2, lambda_value)
    if q_g.ndim != 2:
        raise ValueError(f"q_g_dist must be [Q, G], got shape {q_g.shape}.")
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q):
        raise ValueError(f"q_q_dist must be [Q, Q] = {(num_q, num_q)} to match q_g_dist, got {q_q.shape}.")
    if g_g.shape != (num_g, num_g):
        raise ValueError(f"g_g_dist must be [G, G] = {(num_g, num_g)} to match q_g_dist, got {g_g.shape}.")
    for name, a in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf; re-ranking needs finite distances.")
    full = np.power(np.block([[q_q, q_g], [q_g.T, g_g]]), 2).astype(np.float32)
    normalised = np.transpose(1.0 * full / np.max(full, axis=0))
    del full
    num_all = num_q + num_g
    return _rerank(lambda s, e: normalised[s:e], num_q, num_all, k1, k2, lambda_value,
                   _auto_block(num_all), False)


def re_ranking_features(q_feats: Mapping, g_feats: Mapping, mode: str, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3, window: int | None = None,
                        block_size: int | None = None, progress: bool = False, normalize: bool = False,
                        lsa_weight: float = 1.0) -> np.ndarray:
    """Memory-lean re-ranking [Q, G] float32 straight from features (a `distances.MODES` mode).

    Distance rows are computed block by block (three passes) and never stored whole; working
    memory is O(N · (k1 + nnz(V))) plus one [block_size, N] slice, and the [Q, G] result.
    Equals `re_ranking` on the same mode's distances (the distance is symmetric, so dividing
    columns by their maximum is dividing each row by its maximum).
    """
    _check_params(k1, k2, lambda_value)
    num_q, num_g = distances_lib.validate_features(q_feats, g_feats, mode)
    keys = distances_lib.required_keys(mode)
    everything = {k: np.concatenate([np.asarray(q_feats[k]), np.asarray(g_feats[k])]) for k in keys}
    num_all = num_q + num_g
    block = block_size or _auto_block(num_all)

    def rows(start, stop):
        part = {k: v[start:stop] for k, v in everything.items()}
        squared = np.square(distances_lib.pairwise_distance(part, everything, mode, window, stop - start,
                                                                  normalize=normalize, lsa_weight=lsa_weight))
        return 1.0 * squared / np.max(squared, axis=1, keepdims=True)

    return _rerank(rows, num_q, num_all, k1, k2, lambda_value, block, progress)
