"""Ranking metrics of given distances: CMC, mAP and mINP under the Market-1501 protocol, and CUHK03 single-shot.
The evaluator (features in, metrics out) is gldfa_jax.evaluation; this module ranks what it computes.

Protocol (shared by the re-ID toolboxes): for each query, gallery images with the same identity
AND the same camera are removed; distractors (pid 0) stay as ordinary wrong matches; queries
with no remaining correct match are skipped. CMC[r] is the fraction of the remaining queries
whose first correct match is within rank r + 1; AP is the mean precision at each correct match
(non-interpolated); INP = (number of correct matches) / (rank of the last one) (Ye et al. 2021).

Ties in distance are ranked by gallery index (a stable sort), so results are deterministic.
Queries are processed in blocks; each block is sorted once, vectorised over its queries, with numpy
on the host or with a jitted sort on the device (`Ranker(on_device=True)`: same results, AP summed
in float32 per query, so equal to ~1e-7).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gldfa_jax import distances as distances_lib
from gldfa_jax.checks import check_int

_INDEX_BITS = np.uint64(32)
_REMOVED = np.uint64(np.iinfo(np.uint64).max)
_BLOCK_ELEMENTS = 4_000_000  # query rows per host block ≈ this / gallery size
_DEVICE_BLOCK_ELEMENTS = 2**25  # ... per device block: its sort holds a few [rows, G] int32/float32 arrays
# eval.protocol values: the Market-1501 protocol above, or CUHK03's original single-shot one (`rank_metrics`).
PROTOCOLS = ("market1501", "cuhk03_single_shot")
RANK_ON = ("auto", "device", "host")  # eval.rank_on values (`ranks_on_device`)


def _labels(name: str, a, length: int | None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {a.shape}.")
    if not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}.")
    if length is not None and a.shape[0] != length:
        raise ValueError(
            f"{name} has {a.shape[0]} entries but the distance matrix needs {length} "
            "(one per query row / gallery column)."
        )
    return a.astype(np.int64)


def _check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids):
    return (
        _labels("q_pids", q_pids, num_q),
        _labels("g_pids", g_pids, num_g),
        _labels("q_camids", q_camids, num_q),
        _labels("g_camids", g_camids, num_g),
    )


def _check_max_rank(max_rank):
    check_int("max_rank", max_rank)


def ranked_gallery(dist: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Gallery indices of each row of dist [Q, G] sorted by (distance, index), the `removed` [Q, G] items last;
    -1 marks them.

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
    order = ranked_gallery(dist, removed)
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


def _device_rank(dist, q_pids, q_camids, g_pids, g_camids):
    """`_block_metrics` on the device for distances [b, G] of queries with labels [b] (traceable): per-query
    (valid, first-hit rank, AP, INP) [b] each."""
    dist = dist.astype(jnp.float32)
    dist = jnp.where(dist == 0, 0.0, dist)  # -0.0 ties with +0.0, as on the host
    removed = (g_pids[None, :] == q_pids[:, None]) & (g_camids[None, :] == q_camids[:, None])
    index = jnp.broadcast_to(jnp.arange(dist.shape[1], dtype=jnp.int32), dist.shape)
    # Keys (removed, distance); the stable sort keeps gallery-index order among ties.
    last, _, order = jax.lax.sort((removed.astype(jnp.int32), dist, index), dimension=1, num_keys=2, is_stable=True)
    hits = (last == 0) & (g_pids[order] == q_pids[:, None])
    found = jnp.cumsum(hits, axis=1, dtype=jnp.int32)
    num_rel = found[:, -1]
    valid = num_rel > 0
    rank = jnp.arange(1, dist.shape[1] + 1, dtype=jnp.float32)
    ap = jnp.sum(jnp.where(hits, found / rank, 0.0), axis=1) / jnp.maximum(num_rel, 1)
    first = jnp.argmax(hits, axis=1)
    last_hit = dist.shape[1] - 1 - jnp.argmax(hits[:, ::-1], axis=1)
    inp = jnp.where(valid, num_rel / (last_hit + 1.0), 0.0)
    return valid, first, ap, inp


@functools.partial(jax.jit, static_argnames=("parts",))
def _device_block_metrics(block, q_pids, q_camids, g_pids, g_camids, parts: int):
    """`_device_rank` of a block [b, G] in `parts` equal sub-blocks, one after the other, so the sort's work arrays
    stay a sub-block's size; the labels [n] are padded to n = parts · ceil(b / parts) rows, and so is the block
    here. One call per block: [n] each."""
    rows = q_pids.shape[0] // parts
    block = jnp.pad(block, ((0, q_pids.shape[0] - block.shape[0]), (0, 0)))
    split = lambda a: a.reshape((parts, rows) + a.shape[1:])
    out = jax.lax.map(
        lambda args: _device_rank(*args, g_pids, g_camids), (split(block), split(q_pids), split(q_camids))
    )
    return tuple(a.reshape(-1) for a in out)


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
            raise ValueError(
                "no query has a correct match in the gallery (after removing same-identity "
                "same-camera images); check q_pids/g_pids and q_camids/g_camids."
            )
        return {
            "cmc": self.hit_counts / self.num_valid,
            "mAP": self.ap_sum / self.num_valid,
            "mINP": self.inp_sum / self.num_valid,
            "num_valid_queries": self.num_valid,
        }


def _check_single_shot(cuhk03_single_shot, repeats, seed):
    if cuhk03_single_shot:
        check_int("repeats", repeats)
    return np.random.default_rng(seed) if cuhk03_single_shot else None


def ranks_on_device(rank_on: str = "auto") -> bool:
    """eval.rank_on ("device", "host" or "auto": the device when the default backend is an accelerator) -> bool."""
    if rank_on not in RANK_ON:
        raise ValueError(f"eval.rank_on must be 'auto', 'device' or 'host', got {rank_on!r}.")
    return rank_on == "device" or (rank_on == "auto" and jax.default_backend() != "cpu")


class Ranker:
    """CMC/mAP/mINP of a [Q, G] distance matrix fed in query blocks, so the matrix need not exist whole.

    `add(rows, block)` takes the distances [len(rows), G] of the queries `rows` (a slice): numpy, or a
    jax.Array that `on_device=True` ranks where it is (no round trip to the host). The device path ranks
    in float32 and does not do CUHK03 single-shot (that needs the host's seeded draws).

    The device path compiles once per block shape: a jax.Array block is ranked in one call (sorted in sub-blocks
    of at most `block_rows` rows, default ~2^25 elements' worth), while numpy blocks are gathered on the host and
    ranked in pieces of `call_rows` rows (default `block_rows`), the last one padded by `result()`. Give `call_rows`
    the row count of the device blocks ranked beside it, and both kinds share one compiled function.
    """

    def __init__(
        self,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        max_rank: int = 50,
        on_device: bool = False,
        cuhk03_single_shot: bool = False,
        repeats: int = 10,
        seed: int = 0,
        block_rows: int | None = None,
        call_rows: int | None = None,
    ):
        _check_max_rank(max_rank)
        q_pids, g_pids = _labels("q_pids", q_pids, None), _labels("g_pids", g_pids, None)
        num_q, num_g = len(q_pids), len(g_pids)
        self.labels = _check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids)
        if on_device and cuhk03_single_shot:
            raise ValueError("cuhk03_single_shot ranks on the host (seeded numpy draws); pass on_device=False.")
        self.rng = _check_single_shot(cuhk03_single_shot, repeats, seed)
        self.repeats, self.on_device = repeats, on_device
        budget = _DEVICE_BLOCK_ELEMENTS if on_device else _BLOCK_ELEMENTS
        self.step = min(block_rows or max(1, budget // max(num_g, 1)), max(num_q, 1))
        self.call_rows = call_rows or self.step
        self.pending = []  # (query indices, numpy distances) not yet ranked on the device: see `_flush`
        self.acc = _RankAccumulator(max_rank, cuhk03_single_shot, repeats)
        if on_device:
            self.device_gallery = jax.device_put((self.labels[1].astype(np.int32), self.labels[3].astype(np.int32)))

    def add(self, rows: slice, block) -> None:
        """Rank the distances block [b, G] of the queries `rows`, b >= len(rows): rows past len(rows) are padding
        (a ragged last block kept at the others' shape, `distances.iter_mode_blocks`) and are left out."""
        q_pids, g_pids, q_camids, g_camids = self.labels
        num = rows.stop - rows.start
        if block.shape[0] < num:
            raise ValueError(f"block has {block.shape[0]} rows, fewer than the {num} queries of rows={rows}.")
        if self.on_device and isinstance(block, jax.Array):
            self._add_on_device(rows, block)
            return
        if self.on_device:
            self.pending.append((np.arange(rows.start, rows.stop), np.asarray(block)[:num]))
            self._flush(final=False)
            return
        block = jax.device_get(block)[:num]
        for sub in range(0, block.shape[0], self.step):
            part = block[sub : sub + self.step]
            sl = slice(rows.start + sub, rows.start + sub + part.shape[0])
            self.acc.add(*_block_metrics(part, q_pids[sl], q_camids[sl], g_pids, g_camids, self.rng, self.repeats))

    def _flush(self, final: bool) -> None:
        """Rank the pending host rows in pieces of `call_rows` (with `final`, the rest too, padded)."""
        if not self.pending:
            return
        queries = np.concatenate([q for q, _ in self.pending])
        block = np.concatenate([b for _, b in self.pending]) if len(self.pending) > 1 else self.pending[0][1]
        done = 0
        while len(queries) - done >= self.call_rows or (final and done < len(queries)):
            stop = min(done + self.call_rows, len(queries))
            part = jax.device_put(distances_lib.pad_rows(block[done:stop], self.call_rows))
            self._add_on_device(queries[done:stop], part)
            done = stop
        self.pending = [(queries[done:], block[done:])] if done < len(queries) else []

    def _add_on_device(self, queries, block) -> None:
        # One call per block, in equal sub-blocks of at most `step` rows (the block padded to their multiple, the
        # labels with it); the padding's results are dropped here. queries: a slice or the indices of the rows.
        labels = [a[queries].astype(np.int32) for a in (self.labels[0], self.labels[2])]
        num, size = len(labels[0]), block.shape[0]
        parts = -(-size // self.step)
        padded = -(-size // parts) * parts
        labels = jax.device_put(tuple(distances_lib.pad_rows(a, padded) for a in labels))
        out = jax.device_get(_device_block_metrics(block, *labels, *self.device_gallery, parts))
        valid, first, ap, inp = (a[:num] for a in out)
        self.acc.add(valid, first, ap.astype(np.float64), inp.astype(np.float64))

    def result(self) -> dict:
        if self.on_device:
            self._flush(final=True)
        return self.acc.result()


def rank_metrics(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    cuhk03_single_shot: bool = False,
    repeats: int = 10,
    seed: int = 0,
    block_size: int | None = None,
    on_device: bool = False,
) -> dict:
    """CMC [max_rank], mAP, mINP (fractions) and the number of evaluated queries.

    distmat [Q, G] (numpy, or a jax.Array when `on_device`). cuhk03_single_shot: the CUHK03 classic protocol —
    CMC averaged over `repeats` draws of one gallery image per identity (seeded; mAP/mINP use the full
    gallery). CMC always has max_rank entries; ranks beyond a short gallery read 1.0 for evaluated queries.
    on_device: rank with the jitted sort on the default device (see `Ranker`).
    """
    distmat = jax.device_put(distmat) if on_device else np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be [num_query, num_gallery], got shape {distmat.shape}.")
    if 0 in distmat.shape:
        raise ValueError(f"distmat {distmat.shape} is empty: need at least one query and one gallery image.")
    if not jnp.issubdtype(distmat.dtype, jnp.floating):
        raise ValueError(f"distmat must hold floating-point distances, got dtype {distmat.dtype}.")
    if bool(jax.device_get(jnp.isnan(distmat).any()) if on_device else np.isnan(distmat).any()):
        raise ValueError("distmat contains NaN; rankings would be undefined.")
    _check_labels(*distmat.shape, q_pids, g_pids, q_camids, g_camids)
    ranker = Ranker(
        q_pids, g_pids, q_camids, g_camids, max_rank, on_device, cuhk03_single_shot, repeats, seed, block_size
    )
    ranker.add(slice(0, distmat.shape[0]), distmat)
    return ranker.result()


class Separation:
    """How well a distance separates people, under the protocol's filter (same id and camera removed), from a
    [Q, G] distance matrix fed in query blocks (`add(rows, block)`, numpy), so the matrix need not exist whole.

    `result()` is {"pos", "neg", "neg_std", "ratio"}: mean distance to true matches, mean and std to other
    identities, and pos / neg (1 = no separation; scale-free, so distances of different scales compare).
    Accumulated in float64.
    """

    def __init__(self, q_pids, g_pids, q_camids, g_camids):
        self.labels = _check_labels(len(q_pids), len(g_pids), q_pids, g_pids, q_camids, g_camids)
        self.sums = np.zeros(5)  # positives: count, sum; negatives: count, sum, sum of squares

    def add(self, rows: slice, block: np.ndarray) -> None:
        q_pids, g_pids, q_camids, g_camids = self.labels
        step = max(1, _BLOCK_ELEMENTS // max(block.shape[1], 1))
        for sub in range(0, block.shape[0], step):
            d = block[sub : sub + step].astype(np.float64)
            sl = slice(rows.start + sub, rows.start + sub + d.shape[0])
            same = q_pids[sl, None] == g_pids[None, :]
            pos = same & (q_camids[sl, None] != g_camids[None, :])
            neg = d[~same]
            self.sums += (pos.sum(), d[pos].sum(), neg.size, neg.sum(), np.square(neg).sum())

    def result(self) -> dict:
        sums = self.sums
        if sums[0] == 0 or sums[2] == 0:
            raise ValueError("separation needs at least one true match and one other identity in the gallery.")
        mean_pos, mean_neg = sums[1] / sums[0], sums[3] / sums[2]
        neg_std = np.sqrt(max(sums[4] / sums[2] - mean_neg**2, 0.0))
        return {
            "pos": float(mean_pos),
            "neg": float(mean_neg),
            "neg_std": float(neg_std),
            "ratio": float(mean_pos / mean_neg),
        }


def separation(dist, q_pids, g_pids, q_camids, g_camids) -> dict:
    """`Separation.result()` of a whole distance matrix [Q, G]."""
    dist = np.asarray(dist)
    _check_labels(*dist.shape, q_pids, g_pids, q_camids, g_camids)
    acc = Separation(q_pids, g_pids, q_camids, g_camids)
    acc.add(slice(0, dist.shape[0]), dist)
    return acc.result()
