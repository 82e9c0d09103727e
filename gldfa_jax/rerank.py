"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), exact and memory-lean.

Both entry points return what the authors' original Python `re_ranking` returns for the same
distances. Like it, they first SQUARE the distances and divide each column of the (query+gallery)
× (query+gallery) matrix by its maximum, so the λ-weighted "original distance" term of the final
matrix is that normalised squared distance, not the raw input (feed Euclidean distances, not
squared ones, to get the published behaviour). Neighbours tied in distance are taken in index
order (the original leaves their order to numpy's unstable sort).

Steps: k1-nearest neighbours → k-reciprocal sets, expanded by the k-reciprocal sets
(k = round(k1/2)) of their members when 2/3 of those lie inside → Gaussian weights V (exp(-d),
row-normalised) → local query expansion (mean of V over the k2 nearest neighbours) → Jaccard
distance Σ min(V_q, V_g) → final = jaccard · (1 − λ) + original · λ.

Here V is a sparse matrix (a few dozen non-zeros per row) instead of the original's dense N × N
float32 matrices, and the neighbour lists, weights and Jaccard sums are computed block by block.
`re_ranking_features` computes each distance once, on the device, and keeps of each row only its
maximum and its `_KEPT` nearest neighbours with their distances (what the k-reciprocal sets and
their weights read; the rare expanded-set member beyond them is computed pair by pair). It takes
the query × gallery part from the evaluation's matrix, and computes the symmetric g×g part as the
tiles on and above its diagonal, each serving its rows and its columns: about half of the
(Q+G)² distances of the original, which dominate its time.
"""

import functools
from collections.abc import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from gldfa_jax import distances as distances_lib
from gldfa_jax.checks import check_int
from gldfa_jax.lsa import LSAOptions

_PAIR_BUDGET = 4_000_000  # (query, gallery) min-pairs expanded at once in the Jaccard step
_BLOCK_BYTES = 2**29  # budget for one [block, N] slice of distances plus its work arrays
_KEPT = 128  # nearest neighbours (and distances) the lean path keeps per row: ≫ k1 + 1, so
# the expanded k-reciprocal sets (neighbours of neighbours) rarely reach beyond
_PAIR_CHUNK = 1024  # expanded-set pairs beyond the kept neighbours, computed at once (one compile)
_LOOKUP_CHUNK = 2**18  # expanded-set pairs looked up at once in the kept lists ([chunk, _KEPT] booleans)
_TILE = 2048  # g×g tile of the lean path: big enough that its merges cost little beside its distances


def _check_params(k1, k2, lambda_value):
    for name, value in (("k1", k1), ("k2", k2)):
        check_int(name, value, hint=" (Zhong et al.: k1=20, k2=6)")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value!r} (Zhong et al.: 0.3).")


@functools.partial(jax.jit, static_argnames=("width",))
def _nearest(normalised: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Rows of O [b, N] -> their `width` nearest columns [b, width] (ascending O, ties to the lower index)
    and those O values [b, width]."""
    negated, columns = jax.lax.top_k(-normalised, width)
    return columns, -negated


def _dense_neighbours(normalised: np.ndarray, width: int, block: int, progress: bool) -> np.ndarray:
    """The first `width` columns of the (tie-stable) argsort of each row of O [N, N]."""
    num_all = normalised.shape[0]
    out = np.empty((num_all, width), np.int64)
    for start in tqdm(range(0, num_all, block), desc="re-rank: neighbours", unit="block", disable=not progress):
        columns, _ = _nearest(jax.device_put(normalised[start : start + block]), width)
        out[start : start + block] = jax.device_get(columns)
    return out


def _expanded_sets(ranks: np.ndarray, rows_idx: np.ndarray, k1: int, recip_half: np.ndarray):
    """Expanded k-reciprocal sets of the rows `rows_idx` as (row, column) pairs, sorted, unique."""
    forward = ranks[rows_idx, : k1 + 1]  # [b, k1+1]
    backward = ranks[forward, : k1 + 1]  # [b, k1+1, k1+1]
    in_set = (backward == rows_idx[:, None, None]).any(-1)  # k-reciprocal members
    half = ranks[:, : recip_half.shape[1]]
    cand = half[forward]  # [b, k1+1, k/2+1]
    cand_ok = recip_half[forward]  # candidate's own half-size set
    inside = ((cand[..., None] == forward[:, None, None, :]) & in_set[:, None, None, :]).any(-1)
    overlap = (inside & cand_ok).sum(-1)
    size = cand_ok.sum(-1)
    take = in_set & (overlap > 2.0 / 3 * size)  # original: > 2/3 of the candidate set
    added = take[..., None] & cand_ok
    pair_rows = np.concatenate(
        [
            np.broadcast_to(rows_idx[:, None], forward.shape)[in_set],
            np.broadcast_to(rows_idx[:, None, None], cand.shape)[added],
        ]
    )
    pair_cols = np.concatenate([forward[in_set], cand[added]])
    keys = np.unique(pair_rows * ranks.shape[0] + pair_cols)
    return keys // ranks.shape[0], keys % ranks.shape[0]


def _reciprocal_half(ranks: np.ndarray, k_half: int) -> np.ndarray:
    """[N, k_half+1] mask: is column j of row i's k_half+1 neighbours k-reciprocal with i."""
    half = ranks[:, : k_half + 1]
    return (half[half] == np.arange(ranks.shape[0])[:, None, None]).any(-1)


def _weights(values: Callable, ranks, k1, num_all, block, progress) -> scipy.sparse.csr_matrix:
    """Sparse V [N, N]: exp(-O) over each expanded set, normalised to sum 1 per row.

    values(r, c) -> O[r, c] [P] float32 for the pairs (r, c) [P] of all expanded sets, row-major.
    """
    recip_half = _reciprocal_half(ranks, int(np.around(k1 / 2.0)))
    pairs = [
        _expanded_sets(ranks, np.arange(start, min(start + block, num_all)), k1, recip_half)
        for start in tqdm(
            range(0, num_all, block), desc="re-rank: k-reciprocal sets", unit="block", disable=not progress
        )
    ]
    r, c = (np.concatenate(a) for a in zip(*pairs))
    w = np.exp(-values(r, c))
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    w = w / np.repeat(np.add.reduceat(w, starts), np.diff(np.r_[starts, r.size]))
    return scipy.sparse.csr_matrix((w.astype(np.float32), (r, c)), shape=(num_all, num_all), dtype=np.float32)


def _query_expansion(v: scipy.sparse.csr_matrix, ranks: np.ndarray, k2: int) -> scipy.sparse.csr_matrix:
    """V_qe[i] = mean of V over the k2 nearest neighbours of i (original skips this for k2 = 1)."""
    if k2 == 1:
        return v
    num_all, width = ranks.shape[0], min(k2, ranks.shape[1])
    pick = scipy.sparse.csr_matrix(
        (np.ones(num_all * width, np.float32), (np.repeat(np.arange(num_all), width), ranks[:, :width].ravel())),
        shape=(num_all, num_all),
    )
    v_qe = (pick @ v).tocsr()
    v_qe.data = (v_qe.data / np.float32(width)).astype(np.float32)
    return v_qe


def _final(original: Callable, v, num_query, lambda_value, block, progress) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (query rows, final [b, G]) = jaccard · (1 − λ) + O · λ, block by block; original(start, stop) is
    O[start:stop, gallery] [b, G]."""
    num_all = v.shape[0]
    num_gallery = num_all - num_query
    by_column = v[num_query:].T.tocsr()  # column j of V -> the gallery rows where it is non-zero
    col_count = np.diff(by_column.indptr)
    vq = v[:num_query].tocsr()
    cum_pairs = np.r_[0, np.cumsum(col_count[vq.indices])]
    pairs_per_query = cum_pairs[vq.indptr[1:]] - cum_pairs[vq.indptr[:-1]]
    for start in tqdm(range(0, num_query, block), desc="re-rank: Jaccard", unit="block", disable=not progress):
        stop = min(start + block, num_query)
        temp = np.empty((stop - start, num_gallery), np.float32)
        lo = start
        while lo < stop:  # sub-blocks bounded by the number of expanded pairs
            cum = np.cumsum(pairs_per_query[lo:stop])
            hi = lo + max(1, int(np.searchsorted(cum, _PAIR_BUDGET, side="right")))
            temp[lo - start : hi - start] = _min_sums(vq[lo:hi], by_column, col_count, num_gallery)
            lo = hi
        jaccard = 1 - temp / (2.0 - temp)
        yield slice(start, stop), jaccard * (1 - lambda_value) + original(start, stop) * lambda_value


def _min_sums(sub, by_column, col_count, num_gallery) -> np.ndarray:
    """Σ_j min(V[q, j], V[g, j]) for the query rows in `sub` and every gallery row g."""
    entry_row = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    counts = col_count[sub.indices]
    first = np.repeat(by_column.indptr[sub.indices], counts)
    at = first + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    mins = np.minimum(np.repeat(sub.data, counts), by_column.data[at])
    sums = np.bincount(
        np.repeat(entry_row, counts) * num_gallery + by_column.indices[at], mins, minlength=sub.shape[0] * num_gallery
    )
    return sums.reshape(sub.shape[0], num_gallery)


def _rerank(ranks, values: Callable, original: Callable, num_query: int, k1, k2, lambda_value, block, progress):
    """Steps 2-4 from the neighbour lists ranks [N, >= k1 + 1]: yields the final rows block by block."""
    v = _query_expansion(_weights(values, ranks, k1, ranks.shape[0], block, progress), ranks, k2)
    return _final(original, v, num_query, lambda_value, block, progress)


def _auto_block(num_all: int) -> int:
    return int(max(16, _BLOCK_BYTES // (16 * max(num_all, 1))))


def _width(k1: int, k2: int, num_all: int) -> int:
    """Neighbours read per row: k1 + 1 for the k-reciprocal sets, k2 for the query expansion."""
    return min(num_all, max(k1 + 1, k2))


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
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
    normalised = 1.0 * full / np.max(full, axis=0)
    del full
    # The original transposes; made contiguous once, so the row blocks below are not strided copies.
    normalised = np.ascontiguousarray(normalised.T)
    num_all = num_q + num_g
    block = _auto_block(num_all)
    ranks = _dense_neighbours(normalised, _width(k1, k2, num_all), block, False)
    out = np.empty((num_q, num_g), np.float32)
    for rows, final in _rerank(
        ranks,
        lambda r, c: normalised[r, c],
        lambda s, e: normalised[s:e, num_q:],
        num_q,
        k1,
        k2,
        lambda_value,
        block,
        False,
    ):
        out[rows] = final
    return out


@functools.partial(jax.jit, static_argnames=("mode", "lsa_options", "kept"))
def _query_rows(x, queries, known, mode, lsa_options, kept):
    """Query rows x [b] of the lean path: distances to all `queries` beside the `known` q×g ones [b, G] ->
    (nearest columns [b, kept], their O [b, kept], max squared distance [b])."""
    computed = distances_lib.block_distance(x, queries, mode, lsa_options)
    squared = jnp.square(jnp.concatenate([computed, known], axis=1))
    top = jnp.max(squared, axis=1, keepdims=True)
    columns, values = _nearest(squared / top, kept)
    return columns, values, top[:, 0]


_paired = jax.jit(distances_lib.paired_distance, static_argnames=("mode", "lsa_options"))


def _take(q_feats: Mapping, g_feats: Mapping, index: np.ndarray) -> dict:
    """Features of images `index` [P] of the query-then-gallery numbering, without concatenating the sets."""
    num_q = next(iter(q_feats.values())).shape[0]
    in_query = index < num_q
    out = {}
    for k in q_feats:
        a = np.empty((index.size,) + q_feats[k].shape[1:], np.float32)
        a[in_query] = q_feats[k][index[in_query]]
        a[~in_query] = g_feats[k][index[~in_query] - num_q]
        out[k] = a
    return out


def _merge(state, at, squared, columns, row_ok, col_ok):
    """Merge squared distances [r, c] of the rows at..at+r into their running nearest lists state = (squared
    [R, kept], columns [R, kept], row max [R]); the new `columns` [c] all lie above the ones merged before, so
    the merged lists stay in (distance, index) order. Rows/columns where row_ok/col_ok is False are left out."""
    vals, cols, top = state
    num = squared.shape[0]
    squared = jnp.where(col_ok[None, :], squared, jnp.inf)
    negated, pos = jax.lax.top_k(-squared, min(vals.shape[1], squared.shape[1]))
    old = [jax.lax.dynamic_slice_in_dim(a, at, num) for a in state]
    cand_v = jnp.concatenate([old[0], -negated], axis=1)
    cand_c = jnp.concatenate([old[1], columns[pos]], axis=1)
    negated, pos = jax.lax.top_k(-cand_v, vals.shape[1])
    merged = (
        -negated,
        jnp.take_along_axis(cand_c, pos, axis=1),
        jnp.maximum(old[2], jnp.max(jnp.where(col_ok[None, :], squared, 0.0), axis=1)),
    )
    merged = [jnp.where(row_ok.reshape((-1,) + (1,) * (m.ndim - 1)), m, o) for m, o in zip(merged, old)]
    return tuple(jax.lax.dynamic_update_slice_in_dim(a, m, at, 0) for a, m in zip(state, merged))


@functools.partial(jax.jit, donate_argnums=(0,))
def _merge_known(state, at, known, columns, row_ok):
    """The known g×q distances [b, Q] of gallery rows into their lists (columns 0..Q-1, before any g×g one)."""
    return _merge(state, at, jnp.square(known), columns, row_ok, jnp.ones(columns.shape, bool))


@functools.partial(
    jax.jit,
    static_argnames=("num_query", "size", "mode", "lsa_options"),
    donate_argnums=(0,),
)
def _gallery_tile(state, g, at, transposed, num_query, size, mode, lsa_options):
    """Tile (I, J), I <= J, of the symmetric g×g distances into the lists of rows I and, when `transposed`
    (a traced bool: off the diagonal), of rows J. at = (start of I, start of J, first new row of I, first new row of
    J): the last tile is moved back to end with the gallery, and rows/columns another tile already covered are left
    out. `transposed` is traced so diagonal and off-diagonal tiles share one compiled function; a diagonal tile's
    second merge then changes no row."""
    x, y = ({k: jax.lax.dynamic_slice_in_dim(v, start, size) for k, v in g.items()} for start in (at[0], at[1]))
    squared = jnp.square(distances_lib.block_distance(x, y, mode, lsa_options))
    rows, cols = at[0] + jnp.arange(size), at[1] + jnp.arange(size)
    rows_ok, cols_ok = rows >= at[2], cols >= at[3]
    state = _merge(state, at[0], squared, num_query + cols, rows_ok, cols_ok)
    return _merge(state, at[1], squared.T, num_query + rows, cols_ok & transposed, rows_ok)


@jax.jit
def _normalised_lists(state):
    """Running lists (squared distances) -> (columns, O = squared / row max), re-sorted by (O, index) since the
    division can make neighbouring distances equal."""
    vals, cols, top = state
    values, columns = jax.lax.sort((vals / top[:, None], cols), dimension=1, num_keys=2)
    return columns, values, top


class _LeanRows:
    """One pass over the distance rows of query + gallery (re_ranking_features): per row its `kept` nearest
    neighbours with their O values and its max squared distance; then O of any pair."""

    def __init__(self, q_feats, g_feats, q_g, kept, block, tile, progress, options):
        self.q, self.g, self.q_g, self.options = q_feats, g_feats, q_g, options
        num_q, num_g = q_g.shape
        self.columns = np.empty((num_q + num_g, kept), np.int32)
        self.values = np.empty((num_q + num_g, kept), np.float32)
        self.top = np.empty(num_q + num_g, np.float32)
        q_dev, g_dev = jax.device_put((q_feats, g_feats))
        rows, tile = min(block, num_q), min(tile, num_g)
        starts = range(0, num_g, tile)
        bar = tqdm(
            total=-(-num_q // rows) + len(starts) * (len(starts) + 3) // 2,
            desc="re-rank: neighbours",
            unit="block",
            disable=not progress,
        )
        # Query rows, whole: [q×q computed | q×g known].
        for start in range(0, num_q, rows):
            stop = min(start + rows, num_q)
            pad = rows - (stop - start)  # whole blocks: one compiled kernel
            x = {k: np.pad(v[start:stop], ((0, pad),) + ((0, 0),) * (v.ndim - 1)) for k, v in q_feats.items()}
            known = jax.device_put(np.pad(q_g[start:stop], ((0, pad), (0, 0))))
            out = jax.device_get(_query_rows(jax.device_put(x), q_dev, known, kept=kept, **options))
            self.columns[start:stop], self.values[start:stop], self.top[start:stop] = (a[: stop - start] for a in out)
            bar.update(1)
        # Gallery rows: [g×q known | g×g]. g×g is symmetric, so only its tiles on and above the diagonal are
        # computed, each merged into the lists of its rows and (transposed) of its columns; tiles come in
        # ascending column order for every row, which keeps ties in index order.
        state = jax.device_put(
            (np.full((num_g, kept), np.inf, np.float32), np.zeros((num_g, kept), np.int32), np.zeros(num_g, np.float32))
        )
        q_columns = jax.device_put(np.arange(num_q, dtype=np.int32))
        clamp = lambda start: min(start, num_g - tile)
        for start in starts:
            at = clamp(start)
            known = jax.device_put(np.ascontiguousarray(q_g[:, at : at + tile].T))
            row_ok = jax.device_put(np.arange(at, at + tile) >= start)
            state = _merge_known(state, jax.device_put(np.int32(at)), known, q_columns, row_ok)
            bar.update(1)
        for i, row_start in enumerate(starts):
            for col_start in starts[i:]:
                at = jax.device_put(np.array([clamp(row_start), clamp(col_start), row_start, col_start], np.int32))
                transposed = jax.device_put(np.bool_(col_start != row_start))
                state = _gallery_tile(state, g_dev, at, transposed, num_query=num_q, size=tile, **options)
            state = jax.block_until_ready(state)  # so the bar counts tiles done, not dispatched
            bar.update(len(starts) - i)

        out = jax.device_get(_normalised_lists(state))
        self.columns[num_q:], self.values[num_q:], self.top[num_q:] = out
        bar.close()

    def pair_values(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """O[r, c] [P]: from the kept neighbours of r, else computed pair by pair."""
        out = np.empty(r.size, np.float32)
        found = np.empty(r.size, bool)
        for lo in range(0, r.size, _LOOKUP_CHUNK):
            sl = slice(lo, lo + _LOOKUP_CHUNK)
            at = self.columns[r[sl]] == c[sl, None]
            found[sl] = at.any(1)
            out[sl] = self.values[r[sl], at.argmax(1)]
        missing = np.flatnonzero(~found)
        for lo in range(0, missing.size, _PAIR_CHUNK):
            sel = missing[lo : lo + _PAIR_CHUNK]
            idx = np.pad(sel, (0, _PAIR_CHUNK - sel.size))
            x, y = (jax.device_put(_take(self.q, self.g, a[idx])) for a in (r, c))
            d = jax.device_get(_paired(x, y, **self.options))[: sel.size]
            out[sel] = 1.0 * np.square(d) / self.top[r[sel]]
        return out

    def original(self, start: int, stop: int) -> np.ndarray:
        """O of the query rows start:stop against the gallery [b, G]."""
        return 1.0 * np.square(self.q_g[start:stop]) / self.top[start:stop, None]


def re_ranking_blocks(
    q_feats: Mapping,
    g_feats: Mapping,
    mode: str,
    q_g_dist,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    lsa_options: LSAOptions = LSAOptions(),
    block_size: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Memory-lean re-ranking from features (a `distances.MODES` mode) and their q_g_dist [Q, G] (that mode's
    `pairwise_distance`): yields (query rows, re-ranked distances [b, G] float32) block by block, so the
    re-ranked matrix need not exist whole (rank each block as it comes).

    Working memory is O(N · (_KEPT + nnz(V))) plus one [block_size, N] slice of distances; block_size is also
    the side of the g×g tiles (default: ~2^29 bytes of rows per block, tiles of _TILE). Equals `re_ranking` on
    the same mode's distances up to float32 rounding of distances computed in other blocks (the distance is
    symmetric, so dividing columns by their maximum is dividing each row by its maximum).
    """
    _check_params(k1, k2, lambda_value)
    num_q, num_g = distances_lib.validate_features(q_feats, g_feats, mode)
    q_g = np.asarray(q_g_dist)
    if q_g.shape != (num_q, num_g):
        raise ValueError(
            f"q_g_dist must be the [Q, G] = {(num_q, num_g)} distances of the features, got shape "
            f"{q_g.shape}; pass distances.pairwise_distance(q_feats, g_feats, mode)."
        )
    keys = distances_lib.required_keys(mode)
    q, g = ({k: np.asarray(f[k], np.float32) for k in keys} for f in (q_feats, g_feats))
    num_all = num_q + num_g
    block = block_size or _auto_block(num_all)
    options = dict(mode=mode, lsa_options=lsa_options)
    kept = min(num_all, max(_KEPT, _width(k1, k2, num_all)))
    rows = _LeanRows(q, g, q_g, kept, block, block_size or _TILE, progress, options)
    ranks = rows.columns[:, : _width(k1, k2, num_all)].astype(np.int64)
    return _rerank(ranks, rows.pair_values, rows.original, num_q, k1, k2, lambda_value, block, progress)


def re_ranking_features(
    q_feats: Mapping,
    g_feats: Mapping,
    mode: str,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    lsa_options: LSAOptions = LSAOptions(),
    block_size: int | None = None,
    progress: bool = False,
    q_g_dist=None,
) -> np.ndarray:
    """Memory-lean re-ranking [Q, G] float32 straight from features (`re_ranking_blocks`, assembled).

    q_g_dist: that mode's [Q, G] distances when already computed; otherwise they are computed here, and the
    result overwrites them row block by row block (each block is read before it is written), so one [Q, G]
    matrix is held, not two.
    """
    _check_params(k1, k2, lambda_value)
    out = None
    if q_g_dist is None:
        q_g_dist = out = distances_lib.pairwise_distance(q_feats, g_feats, mode, lsa_options, progress=progress)
    blocks = re_ranking_blocks(
        q_feats, g_feats, mode, q_g_dist, k1, k2, lambda_value, lsa_options, block_size=block_size, progress=progress
    )
    if out is None:
        out = np.empty(np.shape(q_g_dist), np.float32)
    for rows, final in blocks:
        out[rows] = final
    return out
