"""Query × gallery distances used at test time, computed block by block (paper §3.2).

Features are a dict `{"global": [N, d], "local": [N, k, d], "final": [N, D]}` (numpy or jax).
Modes: "global" (Euclidean of global, eq. 1), "lsa" (LSA of local, eqs. 2-5), "global+lsa"
(their sum: the paper's inference distance) and "final" (Euclidean of the concatenated feature).
A block is a slice of queries × the whole gallery, so peak memory is bounded by `block_size`.
"""
import functools
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from gldfa_jax.lsa import check_finite, lsa_distance

MODES = ("global", "lsa", "global+lsa", "final")
_MODE_KEYS = {"global": ("global",), "lsa": ("local",), "global+lsa": ("global", "local"),
              "final": ("final",)}
_KEY_NDIM = {"global": 2, "local": 3, "final": 2}


@jax.jit
def _euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    shift = jnp.mean(y, axis=0)  # shift-invariant; centring reduces float32 cancellation
    x, y = x - shift, y - shift
    squared = (jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :]
               - 2.0 * jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.sqrt(jnp.maximum(squared, 1e-12))


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


def validate_features(q_feats: Mapping, g_feats: Mapping, mode: str) -> tuple[int, int]:
    """Check that both feature dicts hold what `mode` needs; returns (num_query, num_gallery)."""
    keys = required_keys(mode)
    counts = []
    for name, feats in (("q_feats", q_feats), ("g_feats", g_feats)):
        if not isinstance(feats, Mapping):
            raise ValueError(f"{name} must be a dict of feature arrays, got {type(feats).__name__}.")
        num = None
        for key in keys:
            if feats.get(key) is None:
                raise ValueError(f"mode {mode!r} needs {name}[{key!r}], which is missing; the model "
                                 f"has no such branch — pick a mode from the keys {sorted(feats)}.")
            a = feats[key]
            if getattr(a, "ndim", None) != _KEY_NDIM[key]:
                want = "[N, k, d]" if key == "local" else "[N, d]"
                raise ValueError(f"{name}[{key!r}] must be {want}, got shape {getattr(a, 'shape', None)}.")
            if num is not None and a.shape[0] != num:
                raise ValueError(f"{name} arrays disagree on the number of images: {key!r} has "
                                 f"{a.shape[0]}, another key has {num}.")
            num = a.shape[0]
            check_finite(f"{name}[{key!r}]", a)
        counts.append(num)
    for key in keys:
        if q_feats[key].shape[1:] != g_feats[key].shape[1:]:
            raise ValueError(f"q_feats[{key!r}] {tuple(q_feats[key].shape)} and g_feats[{key!r}] "
                             f"{tuple(g_feats[key].shape)} differ in feature shape.")
    return counts[0], counts[1]


@functools.partial(jax.jit, static_argnames=("mode", "window", "normalize", "lsa_weight"))
def block_distance(q: Mapping, g: Mapping, mode: str, window, normalize: bool, lsa_weight: float) -> jax.Array:
    """Device features in, device distances out: {key: [M, ...]} x {key: [N, ...]} -> [M, N] float32 (no checks;
    `pairwise_distance` validates). Traceable, so callers fuse it with what they do with the block."""
    if mode == "global":
        return euclidean_distance(q["global"], g["global"])
    if mode == "final":
        return euclidean_distance(q["final"], g["final"])
    local = lsa_distance(q["local"], g["local"], window, normalize=normalize)
    if mode == "lsa":
        return local
    # §3.2: the sum of global and local distances at inference (lsa_weight 1).
    return euclidean_distance(q["global"], g["global"]) + lsa_weight * local


def paired_distance(x: Mapping, y: Mapping, mode: str, window, normalize: bool, lsa_weight: float) -> jax.Array:
    """Distances of matched pairs: device features {key: [P, ...]} x {key: [P, ...]} -> [P] float32, pair i being
    (x[i], y[i]); the same function as `block_distance`, applied to one pair at a time (traceable)."""
    def one(a, b):
        single = lambda f: {k: v[None] for k, v in f.items()}
        return block_distance(single(a), single(b), mode, window, normalize, lsa_weight)[0, 0]
    return jax.vmap(one)(x, y)


def iter_distance_blocks(q_feats: Mapping, g_feats: Mapping, mode: str, window: int | None = None,
                         block_size: int = 2048, progress: bool = False, normalize: bool = False,
                         lsa_weight: float = 1.0, to_host: bool = True) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (query_slice, distances [len(slice), G] float32) for consecutive query blocks: numpy, or with
    `to_host=False` the jax.Array where it was computed (so the device can rank it without a round trip).

    window and normalize are lsa_distance's (the LSA modes only); "global+lsa" is global + lsa_weight · lsa.

    Only one block of the [Q, G] matrix exists at a time, so MSMT17-scale galleries fit.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    num_q, _ = validate_features(q_feats, g_feats, mode)
    keys = required_keys(mode)
    gallery = jax.device_put({key: g_feats[key] for key in keys})
    starts = range(0, num_q, block_size)
    for start in tqdm(starts, desc=f"distances ({mode})", unit="block", disable=not progress):
        rows = slice(start, min(start + block_size, num_q))
        query = jax.device_put({key: q_feats[key][rows] for key in keys})
        block = block_distance(query, gallery, mode, window, normalize, lsa_weight)
        yield rows, jax.device_get(block) if to_host else block


def pairwise_distance(q_feats: Mapping, g_feats: Mapping, mode: str, window: int | None = None,
                      block_size: int = 2048, progress: bool = False, normalize: bool = False,
                      lsa_weight: float = 1.0) -> np.ndarray:
    """Distance matrix [Q, G] float32 (numpy) for one of MODES, computed block by block."""
    num_q, num_g = validate_features(q_feats, g_feats, mode)
    out = np.empty((num_q, num_g), np.float32)
    for rows, block in iter_distance_blocks(q_feats, g_feats, mode, window, block_size, progress, normalize,
                                            lsa_weight):
        out[rows] = block
    return out
