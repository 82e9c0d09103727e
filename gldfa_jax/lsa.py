"""Local Sliding Alignment distance (paper §3.2, Algorithm 1, eqs. 2-5).

PRELIMINARY core written by the coordinator so other modules can import it; the owner of
issue 2 replaces/extends it (validation, automatic blocking, dtype handling, docs).
"""
import jax
import jax.numpy as jnp


def default_window(num_stripes: int) -> int:
    """§3.2: W = k / 2 (at least 1)."""
    return max(1, num_stripes // 2)


def stripe_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """Euclidean distances of every stripe pair: x [M, k, d], y [N, k, d] -> [M, N, k, k]."""
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    xx = jnp.sum(x * x, -1)  # [M, k]
    yy = jnp.sum(y * y, -1)  # [N, k]
    xy = jnp.einsum("mid,njd->mnij", x, y)
    d2 = xx[:, None, :, None] + yy[None, :, None, :] - 2.0 * xy
    # Clamp before sqrt: coincident stripes (d2 = 0) would give an infinite gradient.
    return jnp.sqrt(jnp.maximum(d2, 1e-12))


def lsa_distance(x: jax.Array, y: jax.Array, window: int | None = None) -> jax.Array:
    """LSA distances: x [M, k, d], y [N, k, d] -> [M, N]."""
    k = x.shape[1]
    w = default_window(k) if not window else window
    half = w // 2
    d = stripe_distances(x, y)
    i = jnp.arange(k)
    band = jnp.abs(i[:, None] - i[None, :]) <= half
    d = jnp.where(band, d, jnp.inf)
    d_ab = jnp.min(d, axis=3).sum(-1)
    d_ba = jnp.min(d, axis=2).sum(-1)
    return jnp.minimum(d_ab, d_ba)
