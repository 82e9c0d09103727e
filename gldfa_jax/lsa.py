"""Local Sliding Alignment distance (paper §3.2, Algorithm 1, eqs. 2-5).

Stripe i of image A is compared with stripes j of image B for
max(1, i - ⌊W/2⌋) <= j <= min(k, i + ⌊W/2⌋) (eq. 2); the per-stripe minima of the Euclidean
(not squared) stripe distances are summed one way (d^AB, eq. 3) and the other way (d^BA, eq. 4),
and the distance is the smaller sum (eq. 5). W = 1 is hard alignment; W >= 2k - 2 compares
every stripe with every stripe.

Only the 2⌊W/2⌋+1 diagonals of the k×k stripe-distance matrix inside the window are computed,
each as one batched matrix product over d, so the cost is (number of stripe pairs in the band)
× d per image pair and Q × G × k × k is never materialised.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gldfa_jax.checks import check_int

# Stripe-pair distances below this (squared) are treated as coincident: sqrt has an infinite
# slope at 0 and LSA runs inside the triplet loss, so the gradient there must stay finite.
_SQUARED_EPS = 1e-12
# Default rows of x per block and columns of y per tile: one block holds its [rows, N] output plus
# the band's product planes of one tile (2⌊W/2⌋+1 planes of at most k × rows × tile floats).
_X_BLOCK = 512
_Y_TILE = 512


def default_window(num_stripes: int) -> int:
    """§3.2: W = k / 2 (at least 1)."""
    return max(1, num_stripes // 2)


@dataclasses.dataclass(frozen=True)
class LSAOptions:
    """How two images' stripes are compared (config.lsa): the same in training's local triplet and at test time,
    since the paper credits LSA in both phases. Frozen, so it is hashable and jit takes it as a static argument."""

    window: int | None = None  # §3.2: the sliding window W; None = k // 2, 1 = hard alignment
    normalize: bool = False  # AlignedReID [1]: stripe distances d -> (e^d-1)/(e^d+1) before the minima
    weight: float = 1.0  # §3.2: "global+lsa" = global + weight · LSA (the paper sums them: 1)

    def __post_init__(self):
        if self.window is not None:
            check_int("lsa.window", self.window, hint=" (0 in a config, None here, for the paper's k // 2)")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"lsa.normalize must be True or False, got {self.normalize!r}.")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"lsa.weight must be a finite number (the paper's is 1.0), got {self.weight!r}.")
        if self.weight < 0:
            raise ValueError(f"lsa.weight={self.weight} is negative: LSA would reward distance; use a value >= 0.")
        object.__setattr__(self, "weight", float(self.weight))

    @classmethod
    def from_config(cls, lsa_config) -> "LSAOptions":
        """config.lsa -> LSAOptions; its window 0 is the paper's k // 2 (None)."""
        return cls(lsa_config.window or None, lsa_config.normalize, lsa_config.weight)


def _safe_sqrt(squared: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(squared, _SQUARED_EPS))


def _check_stripes(name: str, a) -> None:
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{name} must be stripe features [num_images, k, d], got shape {shape}; "
            "stack the k stripe vectors of each image along axis 1."
        )
    if shape[1] < 1 or shape[2] < 1:
        raise ValueError(f"{name} has shape {tuple(shape)}: k and d must be >= 1.")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a floating-point array (float16/bfloat16/float32/float64), "
            f"got dtype {a.dtype}; cast it with .astype(np.float32)."
        )


def check_finite(name: str, a) -> None:
    """Raise ValueError if a concrete array holds NaN/inf. Traced values (inside jit, grad or vmap)
    are unknown at trace time and are not checked, so this never forces a host sync under jit."""
    if isinstance(a, np.ndarray):
        ok = bool(np.isfinite(a).all())
    else:
        try:
            ok = bool(jnp.isfinite(a).all())
        except jax.errors.ConcretizationTypeError:
            return
    if not ok:
        raise ValueError(
            f"{name} contains NaN or inf values; distances would be meaningless. "
            "Check the features (e.g. a diverged model) before computing distances."
        )


def _radius(window, num_stripes: int) -> int:
    """⌊W/2⌋ for eq. 2, clipped to k - 1 (a wider window changes nothing)."""
    if window is None:
        window = default_window(num_stripes)
    check_int("window", window, hint=f" (or None for k // 2 = {default_window(num_stripes)}); W = 1 is hard alignment")
    return min(int(window) // 2, num_stripes - 1)


def stripe_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """Euclidean distances of every stripe pair: x [M, k, d], y [N, k, d] -> [M, N, k, k] float32.

    For inspection and figures (it holds M × N × k × k values); retrieval uses `lsa_distance`.
    """
    _check_stripes("x", x)
    _check_stripes("y", y)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must have the same [k, d], got x {tuple(x.shape)} and y {tuple(y.shape)}.")
    return _stripe_distances(jax.device_put(x), jax.device_put(y))  # explicit host -> device (transfer guard)


@jax.jit
def _stripe_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    xy = jnp.einsum("mid,njd->mnij", x, y, precision=jax.lax.Precision.HIGHEST)
    xx = jnp.sum(x * x, -1)
    yy = jnp.sum(y * y, -1)
    return _safe_sqrt(xx[:, None, :, None] + yy[None, :, None, :] - 2.0 * xy)


def normalize_stripe_distance(d: jax.Array) -> jax.Array:
    """AlignedReID's stripe-distance normalisation (e^d − 1) / (e^d + 1) = tanh(d / 2) (ref. [1], Luo et al.
    2019): each stripe contributes at most 1, so one badly matched stripe cannot dominate the sum."""
    return jnp.tanh(0.5 * d)


def _band_minima(xt: jax.Array, yt: jax.Array, radius: int, normalize: bool = False) -> jax.Array:
    """xt [k, M, d], yt [k, N, d] float32 (stripe-major) -> LSA distances [M, N]."""
    k = xt.shape[0]
    xx = jnp.sum(xt * xt, -1)  # [k, M]
    yy = jnp.sum(yt * yt, -1)  # [k, N]
    by_x = [[] for _ in range(k)]  # squared distances of the band, grouped by the stripe of x
    by_y = [[] for _ in range(k)]  # ... and by the stripe of y
    for offset in range(-radius, radius + 1):
        i0, i1 = max(0, -offset), k - max(0, offset)  # x stripes i, paired with y stripes i + offset
        dots = jnp.einsum("smd,snd->smn", xt[i0:i1], yt[i0 + offset : i1 + offset], precision=jax.lax.Precision.HIGHEST)
        squared = xx[i0:i1, :, None] + yy[i0 + offset : i1 + offset, None, :] - 2.0 * dots
        for s in range(i1 - i0):
            by_x[i0 + s].append(squared[s])
            by_y[i0 + s + offset].append(squared[s])
    # Minima are taken on squared distances (sqrt and the normalisation are monotone), so only 2k square
    # roots remain.
    post = normalize_stripe_distance if normalize else (lambda d: d)

    def summed(groups):
        return sum(post(_safe_sqrt(functools.reduce(jnp.minimum, group))) for group in groups)

    return jnp.minimum(summed(by_x), summed(by_y))  # eq. 5


@functools.partial(jax.jit, static_argnames=("radius", "normalize"))
def _lsa_block(xt: jax.Array, y_tiles: jax.Array, radius: int, normalize: bool) -> jax.Array:
    """xt [k, M, d], y_tiles [T, k, tile, d] -> [M, T * tile].

    Gallery tiles keep the band's 2⌊W/2⌋+1 product planes of one tile in cache; without them
    the element-wise minima stream every plane through memory and dominate the run time.
    """
    if y_tiles.shape[0] == 1:
        return _band_minima(xt, y_tiles[0], radius, normalize)
    out = jax.lax.map(lambda yt: _band_minima(xt, yt, radius, normalize), y_tiles)  # [T, M, tile]
    return jnp.swapaxes(out, 0, 1).reshape(xt.shape[1], -1)


def _tile_y(yt: jax.Array) -> jax.Array:
    """[k, N, d] -> [T, k, tile, d], zero-padded to whole tiles (padding columns are sliced off)."""
    k, num_y, dim = yt.shape
    if num_y <= _Y_TILE:
        return yt[None]
    num_tiles = -(-num_y // _Y_TILE)
    yt = jnp.pad(yt, ((0, 0), (0, num_tiles * _Y_TILE - num_y), (0, 0)))
    return jnp.swapaxes(yt.reshape(k, num_tiles, _Y_TILE, dim), 0, 1)


def _block_rows(num_x: int) -> int:
    """Rows of x per block: about _X_BLOCK, balanced so the padded last block wastes little."""
    num_blocks = -(-num_x // _X_BLOCK)
    if num_blocks <= 1:
        return num_x
    return (-(-num_x // num_blocks) + 7) // 8 * 8


def _stripe_major(x: jax.Array) -> jax.Array:
    """[N, k, d] -> float32 [k, N, d]."""
    return jnp.swapaxes(jnp.asarray(x, jnp.float32), 0, 1)


def prepare_stripes(y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Stripes y [N, k, d] as `prepared_distance` takes them: (tiles [T, k, tile, d], shift [1, 1, d]) float32.

    Distances are invariant to a common shift; centring on y's mean shrinks the norms in |x|² + |y|² - 2x·y
    and with them float32 cancellation (large for post-ReLU features that share a big mean). One vector,
    because stripe i meets stripe j. Traceable; a gallery prepared once serves every query block.
    """
    yt = _stripe_major(y)
    shift = jnp.mean(yt, axis=(0, 1), keepdims=True)
    return _tile_y(yt - shift), shift


def prepared_distance(
    x: jax.Array,
    prepared: tuple,
    num_y: int,
    window: int | None = None,
    normalize: bool = False,
    block_size: int | None = None,
) -> jax.Array:
    """LSA distances of x [M, k, d] to the num_y stripes of `prepare_stripes` -> [M, num_y] float32, in blocks of
    `block_size` rows of x (traceable, no checks: `lsa_distance` checks)."""
    tiles, shift = prepared
    return _blocked(_stripe_major(x) - shift, tiles, num_y, _radius(window, x.shape[1]), bool(normalize), block_size)


def _blocked(xt: jax.Array, tiles: jax.Array, num_y: int, radius: int, normalize: bool, block_size) -> jax.Array:
    """Centred xt [k, M, d] against centred tiles -> [M, num_y], `block_size` rows of x at a time."""
    num_x = xt.shape[1]
    rows = int(block_size) if block_size else _block_rows(num_x)
    if num_x <= rows:
        return _lsa_block(xt, tiles, radius, normalize)[:, :num_y]
    blocks = []
    for start in range(0, num_x, rows):
        xb = xt[:, start : start + rows]
        short = rows - xb.shape[1]
        if short:  # pad the last block so it reuses the compiled kernel
            xb = jnp.pad(xb, ((0, 0), (0, short), (0, 0)))
        blocks.append(_lsa_block(xb, tiles, radius, normalize)[: rows - short, :num_y])
    return jnp.concatenate(blocks, axis=0)


def candidate_distance(x: jax.Array, y: jax.Array, window: int | None = None, normalize: bool = False) -> jax.Array:
    """LSA distances of one image to its candidates: x [k, d], y [K, k, d] -> [K] float32 (traceable, no checks;
    vmap it over queries). Every stripe pair comes from one product and the band is masked: for one image the
    banded products of `lsa_distance` are matrix-vector products that read each candidate stripe once per
    diagonal, about 4x slower at K = 1,000."""
    dist = jnp.where(window_band(x.shape[0], window), _stripe_distances(x[None], y)[0], jnp.inf)  # [K, k, k]
    post = normalize_stripe_distance if normalize else (lambda d: d)
    d_ab = jnp.sum(post(jnp.min(dist, 2)), 1)  # eq. 3
    d_ba = jnp.sum(post(jnp.min(dist, 1)), 1)  # eq. 4
    return jnp.minimum(d_ab, d_ba)  # eq. 5


def window_band(num_stripes: int, window: int | None = None) -> np.ndarray:
    """[k, k] bool: the stripe pairs (i, j) eq. 2's window compares, |i - j| <= W // 2 (W None: k // 2)."""
    stripe = np.arange(num_stripes)
    return np.abs(stripe[:, None] - stripe[None, :]) <= _radius(window, num_stripes)


def lsa_distance(
    x: jax.Array, y: jax.Array, window: int | None = None, block_size: int | None = None, normalize: bool = False
) -> jax.Array:
    """LSA distances (Algorithm 1): x [M, k, d], y [N, k, d] -> [M, N] float32.

    window: W of eq. 2 (None = k // 2, §3.2); 1 = hard alignment; must be >= 1.
    normalize: each stripe's aligned distance d becomes (e^d − 1) / (e^d + 1) before the sums of eqs. 3-4
      (AlignedReID [1]; not in the paper, which sums raw Euclidean distances).
    block_size: rows of x per block (None: about 512, balanced over the blocks); the last block is
      padded so every block reuses one compiled kernel. y is processed in tiles of 512 rows, so a
      block holds its [block_size, N] output and the band products of one tile, never M × N × k × k.
    float16/bfloat16/float64 inputs are computed in float32. Differentiable (finite gradients
    also for coincident stripes), traceable inside jit/vmap; NaN/inf inputs raise ValueError
    when the inputs are concrete arrays.
    """
    _check_stripes("x", x)
    _check_stripes("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of stripes k, got x {tuple(x.shape)} and y {tuple(y.shape)}."
        )
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must have the same stripe dimension d, got x {tuple(x.shape)} and y {tuple(y.shape)}."
        )
    if block_size is not None:
        check_int("block_size", block_size, hint=" (or None: blocks sized automatically)")
    _radius(window, x.shape[1])  # a bad window fails here, before any computation
    check_finite("x", x)
    check_finite("y", y)
    x, y = jax.device_put((x, y))  # explicit host -> device
    return prepared_distance(x, prepare_stripes(y), y.shape[0], window, normalize, block_size)
