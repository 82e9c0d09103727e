"""Query × gallery distances used at test time, computed block by block (paper §3.2).

Features are a dict `{"global": [N, d], "local": [N, k, d], "final": [N, D]}` (numpy or jax).
Modes: "global" (Euclidean of global, eq. 1), "lsa" (LSA of local, eqs. 2-5), "global+lsa"
(their sum: the paper's inference distance) and "final" (Euclidean of the concatenated feature).
A block is a slice of queries × the whole gallery, so peak memory is bounded by `block_size`.
"""

import functools
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from gldfa_jax import lsa
from gldfa_jax.checks import check_int
from gldfa_jax.lsa import LSAOptions, check_finite

MODES = ("global", "lsa", "global+lsa", "final")
_MODE_KEYS = {"global": ("global",), "lsa": ("local",), "global+lsa": ("global", "local"), "final": ("final",)}
_KEY_NDIM = {"global": 2, "local": 3, "final": 2}


# Gallery rows per tile of a Euclidean block. Untiled, XLA:CPU allocated about a gallery's size more inside
# every call (measured: +790 MiB beside a 160 MiB block for MSMT17's 2,304-d "final" feature); tiled, a tile's
# worth, and the call runs faster.
_TILE = 4096


def _centred(y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """y [N, d] -> (centred tiles [T, tile, d], their squared norms [T, tile], mean [d]) float32, zero-padded
    to whole tiles. Distances are shift-invariant and centring reduces float32 cancellation; a gallery is
    prepared once, not once per query block."""
    y = y.astype(jnp.float32)
    shift = jnp.mean(y, axis=0)
    size = min(y.shape[0], _TILE)
    tiles = jnp.pad(y - shift, ((0, -y.shape[0] % size), (0, 0))).reshape(-1, size, y.shape[1])
    return tiles, jnp.sum(tiles * tiles, -1), shift


def _euclidean_to(x: jax.Array, centred: tuple, num_y: int) -> jax.Array:
    """x [M, d] against the num_y rows of `_centred` y -> [M, num_y] (traceable)."""
    tiles, yy, shift = centred
    x = x.astype(jnp.float32) - shift
    xx = jnp.sum(x * x, 1)

    def tile(args):
        y, y_sq = args
        squared = xx[:, None] + y_sq[None, :] - 2.0 * jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.sqrt(jnp.maximum(squared, 1e-12))

    out = jax.lax.map(tile, (tiles, yy))  # [T, M, tile]
    return jnp.swapaxes(out, 0, 1).reshape(x.shape[0], -1)[:, :num_y]


@jax.jit
def _euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
    return _euclidean_to(x, _centred(y), y.shape[0])


def euclidean_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Euclidean distances (eq. 1): x [M, d], y [N, d] -> [M, N] float32."""
    for name, a in (("x", x), ("y", y)):
        if getattr(a, "ndim", None) != 2:
            raise ValueError(f"{name} must be [num_images, d], got shape {getattr(a, 'shape', None)}.")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension, got {tuple(x.shape)} and {tuple(y.shape)}.")
    return _euclidean(jax.device_put(x), jax.device_put(y))


def required_keys(mode: str) -> tuple[str, ...]:
    """Feature keys a distance mode reads, e.g. ("global", "local") for "global+lsa"."""
    if mode not in _MODE_KEYS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    return _MODE_KEYS[mode]


def validate_features(q_feats: Mapping, g_feats: Mapping, mode: str | Sequence[str]) -> tuple[int, int]:
    """Check that both feature dicts hold what `mode` (or each of several modes) needs, each key once; returns
    (num_query, num_gallery)."""
    reader = {}  # key -> the first mode that reads it
    for m in (mode,) if isinstance(mode, str) else mode:
        for key in required_keys(m):
            reader.setdefault(key, m)
    keys = tuple(reader)
    counts = []
    for name, feats in (("q_feats", q_feats), ("g_feats", g_feats)):
        if not isinstance(feats, Mapping):
            raise ValueError(f"{name} must be a dict of feature arrays, got {type(feats).__name__}.")
        num = None
        for key in keys:
            if feats.get(key) is None:
                raise ValueError(
                    f"mode {reader[key]!r} needs {name}[{key!r}], which is missing; the model "
                    f"has no such branch — pick a mode from the keys {sorted(feats)}."
                )
            a = feats[key]
            if getattr(a, "ndim", None) != _KEY_NDIM[key]:
                want = "[N, k, d]" if key == "local" else "[N, d]"
                raise ValueError(f"{name}[{key!r}] must be {want}, got shape {getattr(a, 'shape', None)}.")
            if num is not None and a.shape[0] != num:
                raise ValueError(
                    f"{name} arrays disagree on the number of images: {key!r} has {a.shape[0]}, another key has {num}."
                )
            num = a.shape[0]
            check_finite(f"{name}[{key!r}]", a)
        counts.append(num)
    for key in keys:
        if q_feats[key].shape[1:] != g_feats[key].shape[1:]:
            raise ValueError(
                f"q_feats[{key!r}] {tuple(q_feats[key].shape)} and g_feats[{key!r}] "
                f"{tuple(g_feats[key].shape)} differ in feature shape."
            )
    return counts[0], counts[1]


def rows_per_block(block_size: int, num_modes: int, num_q: int) -> int:
    """Query rows of each block of `iter_mode_blocks`: block_size // num_modes, at most num_q, at least 1."""
    return min(max(1, block_size // num_modes), num_q)


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """a [n, ...] -> [rows, ...], 1 <= n <= rows, the new rows copies of the last one: a ragged last block takes
    the shape of the others, so a jitted function meets one shape (one compile). Copies of a real row keep the
    padding finite (a zero stripe would divide by its norm under lsa.normalize)."""
    return np.pad(a, ((0, rows - a.shape[0]),) + ((0, 0),) * (a.ndim - 1), mode="edge")


def _prepare_gallery(g: Mapping, keys: tuple) -> dict:
    """Gallery features as the distances consume them (traceable): Euclidean keys `_centred`, stripes
    `lsa.prepare_stripes`. A pass prepares its gallery once, not once per query block."""
    return {key: lsa.prepare_stripes(g[key]) if key == "local" else _centred(g[key]) for key in keys}


def _mode_distances(q: Mapping, prepared: Mapping, modes: tuple, lsa_options: LSAOptions, num_g: int) -> dict:
    """{mode: [M, num_g]} for `modes` against a `_prepare_gallery` gallery, each of the global, final and LSA
    distances computed at most once (traceable)."""
    out = {}

    def get(mode):
        if mode not in out:
            if mode in ("global", "final"):
                out[mode] = _euclidean_to(q[mode], prepared[mode], num_g)
            elif mode == "lsa":
                out[mode] = lsa.prepared_distance(
                    q["local"], prepared["local"], num_g, lsa_options.window, lsa_options.normalize
                )
            else:  # §3.2: the sum of global and local distances at inference (weight 1)
                out[mode] = get("global") + lsa_options.weight * get("lsa")
        return out[mode]

    return {mode: get(mode) for mode in modes}


@functools.partial(jax.jit, static_argnames=("mode", "lsa_options"))
def block_distance(q: Mapping, g: Mapping, mode: str, lsa_options: LSAOptions) -> jax.Array:
    """Device features in, device distances out: {key: [M, ...]} x {key: [N, ...]} -> [M, N] float32 (no checks;
    `pairwise_distance` validates). Traceable, so callers fuse it with what they do with the block."""
    keys = required_keys(mode)
    prepared = _prepare_gallery(g, keys)
    return _mode_distances(q, prepared, (mode,), lsa_options, g[keys[0]].shape[0])[mode]


_prepare = jax.jit(_prepare_gallery, static_argnames=("keys",))
# One compiled call for several modes: "global+lsa" reuses the "global" and "lsa" blocks beside it.
_block_distances = jax.jit(_mode_distances, static_argnames=("modes", "lsa_options", "num_g"))


def paired_distance(x: Mapping, y: Mapping, mode: str, lsa_options: LSAOptions) -> jax.Array:
    """Distances of matched pairs: device features {key: [P, ...]} x {key: [P, ...]} -> [P] float32, pair i being
    (x[i], y[i]); the same function as `block_distance`, applied to one pair at a time (traceable)."""

    def one(a, b):
        single = lambda f: {k: v[None] for k, v in f.items()}
        return block_distance(single(a), single(b), mode, lsa_options)[0, 0]

    return jax.vmap(one)(x, y)


def candidate_distance(q: Mapping, candidates: Mapping, mode: str, lsa_options: LSAOptions) -> jax.Array:
    """Distances of one query to its own candidates: {key: [...]} x {key: [K, ...]} -> [K] float32, the function of
    `block_distance` in the form that suits a shortlist (traceable; vmap it over queries)."""

    def euclidean(key):
        diff = candidates[key].astype(jnp.float32) - q[key].astype(jnp.float32)
        return jnp.sqrt(jnp.maximum(jnp.sum(diff * diff, -1), 1e-12))

    if mode in ("global", "final"):
        return euclidean(mode)
    local = lsa.candidate_distance(q["local"], candidates["local"], lsa_options.window, lsa_options.normalize)
    return local if mode == "lsa" else euclidean("global") + lsa_options.weight * local


def iter_mode_blocks(
    q_feats: Mapping,
    g_feats: Mapping,
    modes: Sequence[str],
    lsa_options: LSAOptions = LSAOptions(),
    block_size: int = 2048,
    progress: bool = False,
    to_host: bool = True,
) -> Iterator[tuple[slice, dict]]:
    """Yield (query_slice, {mode: distances [len(slice), G] float32}) for consecutive query blocks, all `modes`
    from one pass: numpy, or with `to_host=False` the jax.Arrays where they were computed (so the device can rank
    them without a round trip). Every block is computed at one shape, so the distances compile once: the last,
    shorter block is padded (`pad_rows`), and its padding rows are dropped on the host, while with
    `to_host=False` they stay (the block is [block rows, G], its first len(slice) rows real; `evaluation.Ranker`
    takes it as it is).

    lsa_options: how the LSA modes compare stripes; "global+lsa" is global + lsa_options.weight · lsa, from the
    same blocks as "global" and "lsa" when those are asked for too.

    A block holds block_size // len(modes) queries, so block_size × G bounds the distances that exist at once
    and MSMT17-scale galleries fit.
    """
    check_int("block_size", block_size)
    modes = tuple(modes)
    if not modes:
        raise ValueError(f"modes must name at least one of {MODES}, got {modes!r}.")
    num_q, num_g = validate_features(q_feats, g_feats, modes)
    keys = tuple(sorted({key for mode in modes for key in required_keys(mode)}))
    # Key by key, so one raw device copy exists at a time (on a CPU the device's memory is the host's).
    gallery = {key: _prepare(jax.device_put({key: g_feats[key]}), (key,))[key] for key in keys}
    rows = rows_per_block(block_size, len(modes), num_q)
    for start in tqdm(
        range(0, num_q, rows), desc=f"distances ({', '.join(modes)})", unit="block", disable=not progress
    ):
        real = slice(start, min(start + rows, num_q))
        query = jax.device_put({key: pad_rows(np.asarray(q_feats[key][real]), rows) for key in keys})
        blocks = _block_distances(query, gallery, modes, lsa_options, num_g)
        if to_host:
            blocks = {mode: block[: real.stop - start] for mode, block in jax.device_get(blocks).items()}
        yield real, blocks


def iter_distance_blocks(
    q_feats: Mapping,
    g_feats: Mapping,
    mode: str,
    lsa_options: LSAOptions = LSAOptions(),
    block_size: int = 2048,
    progress: bool = False,
    to_host: bool = True,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (query_slice, distances [len(slice), G] float32) of one mode: `iter_mode_blocks` for (mode,)."""
    for rows, blocks in iter_mode_blocks(q_feats, g_feats, (mode,), lsa_options, block_size, progress, to_host):
        yield rows, blocks[mode]


def pairwise_distance(
    q_feats: Mapping,
    g_feats: Mapping,
    mode: str,
    lsa_options: LSAOptions = LSAOptions(),
    block_size: int = 2048,
    progress: bool = False,
) -> np.ndarray:
    """Distance matrix [Q, G] float32 (numpy) for one of MODES, computed block by block."""
    num_q, num_g = validate_features(q_feats, g_feats, mode)
    out = np.empty((num_q, num_g), np.float32)
    for rows, block in iter_distance_blocks(q_feats, g_feats, mode, lsa_options, block_size, progress):
        out[rows] = block
    return out
