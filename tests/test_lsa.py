"""LSA distance against Algorithm 1 written literally with Python loops."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gldfa_jax import lsa


def algorithm_1(fa, fb, window):
    """Algorithm 1 of the paper, 1-based as printed: D_A, swap, D_B, min of the sums (eq. 5)."""
    k = fa.shape[0]
    sums = []
    for a, b in ((fa, fb), (fb, fa)):
        d_set = []
        for i in range(1, k + 1):
            d_align = np.linalg.norm(a[i - 1] - b[i - 1])
            w_up, w_down = max(1, i - window // 2), min(k, i + window // 2)
            for j in range(1, k + 1):
                if w_up <= j <= w_down:
                    d_align = min(np.linalg.norm(a[i - 1] - b[j - 1]), d_align)
            d_set.append(d_align)
        sums.append(sum(d_set))
    return min(sums)


def naive_matrix(x, y, window):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.array([[algorithm_1(a, b, window) for b in y] for a in x])


def stripes(rng, n, k, d, dtype=np.float32):
    return rng.normal(size=(n, k, d)).astype(dtype)


@pytest.mark.parametrize(
    "k, window",
    [(8, None), (8, 1), (8, 2), (8, 3), (8, 4), (8, 6), (8, 8), (8, 15), (6, 4), (1, None), (1, 5), (3, 100)],
)
def test_matches_algorithm_1(k, window):
    rng = np.random.default_rng(k * 100 + (window or 0))
    x, y = stripes(rng, 5, k, 12), stripes(rng, 7, k, 12)
    got = lsa.lsa_distance(x, y, window)
    chex.assert_shape(got, (5, 7))
    chex.assert_type(got, jnp.float32)
    expected = naive_matrix(x, y, window if window is not None else lsa.default_window(k))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)


def test_paper_example_windows():
    # §3.2: k = 8, W = 4: stripe 1 of A sees stripes 1..3 of B, stripe 4 sees 2..6.
    x = np.zeros((1, 8, 1), np.float32)
    y = np.arange(1, 9, dtype=np.float32).reshape(1, 8, 1)  # stripe j of B has value j
    d_ab = sum(max(1, i - 2) for i in range(1, 9))  # nearest in-window stripe of B: the lowest j
    d_ba = sum(range(1, 9))  # every stripe of A is 0
    assert float(lsa.lsa_distance(x, y, 4)[0, 0]) == pytest.approx(min(d_ab, d_ba), rel=1e-5)
    assert d_ab == 23  # stripe 1 -> 1 (window [1, 3]), stripe 4 -> 2 (window [2, 6]), ...


def test_window_one_is_hard_alignment():
    rng = np.random.default_rng(1)
    x, y = stripes(rng, 4, 6, 5), stripes(rng, 3, 6, 5)
    hard = np.linalg.norm(x[:, None] - y[None], axis=-1).sum(-1)
    np.testing.assert_allclose(np.asarray(lsa.lsa_distance(x, y, 1)), hard, rtol=1e-5)


def test_full_window_matches_stripe_distances():
    rng = np.random.default_rng(2)
    x, y = stripes(rng, 3, 5, 4), stripes(rng, 4, 5, 4)
    full = np.asarray(lsa.stripe_distances(x, y))
    chex.assert_shape(full, (3, 4, 5, 5))
    expected = np.minimum(full.min(3).sum(-1), full.min(2).sum(-1))
    np.testing.assert_allclose(np.asarray(lsa.lsa_distance(x, y, 9)), expected, rtol=1e-5)


def test_blocking_and_gallery_tiles_do_not_change_results():
    rng = np.random.default_rng(3)
    x, y = stripes(rng, 37, 4, 8), stripes(rng, 1100, 4, 8)  # > one 512-row tile of y
    whole = np.asarray(lsa.lsa_distance(x[:1], y))
    blocked = np.asarray(lsa.lsa_distance(x, y, block_size=10))
    chex.assert_shape(blocked, (37, 1100))
    np.testing.assert_allclose(blocked[:1], whole, rtol=1e-6)
    np.testing.assert_allclose(blocked[:3, :50], naive_matrix(x[:3], y[:50], 2), rtol=1e-5, atol=1e-4)


def test_symmetric_and_near_zero_on_identical_images():
    rng = np.random.default_rng(4)
    x = np.abs(stripes(rng, 6, 8, 16)) + 5.0  # post-ReLU-like: a large shared mean
    d = np.asarray(lsa.lsa_distance(x, x))
    np.testing.assert_allclose(d, d.T, atol=1e-4)
    # |x|² + |y|² - 2x·y in float32 leaves ~sqrt(eps)·|x| per stripe; centring keeps it small.
    np.testing.assert_array_less(np.diag(d), 1e-2 * d[~np.eye(6, dtype=bool)].min())


def test_finite_gradients_with_coincident_stripes_under_jit_and_vmap():
    rng = np.random.default_rng(5)
    x = jnp.asarray(stripes(rng, 4, 8, 16))
    x = x.at[1].set(x[0]).at[2, 3].set(x[2, 4])  # identical images and identical stripes

    @jax.jit
    def loss(feats):
        return jnp.sum(lsa.lsa_distance(feats, feats))

    grads = jax.grad(loss)(x)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads).sum()) > 0
    pairwise = jax.vmap(lambda a, b: lsa.lsa_distance(a[None], b[None])[0, 0])(x, x[::-1])
    np.testing.assert_allclose(
        np.asarray(pairwise), np.diag(np.asarray(lsa.lsa_distance(x, x[::-1]))), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_inputs_computed_in_float32(dtype):
    rng = np.random.default_rng(6)
    x, y = jnp.asarray(stripes(rng, 3, 8, 16), dtype), jnp.asarray(stripes(rng, 4, 8, 16), dtype)
    got = lsa.lsa_distance(x, y)
    chex.assert_type(got, jnp.float32)
    expected = naive_matrix(np.asarray(x.astype(jnp.float32)), np.asarray(y.astype(jnp.float32)), 4)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "x_shape, y_shape, kwargs, name",
    [
        ((2, 8, 4), (3, 6, 4), {}, "stripes k"),
        ((2, 8, 4), (3, 8, 5), {}, "dimension d"),
        ((2, 8), (3, 8, 4), {}, "x must"),
        ((2, 8, 4), (3, 4), {}, "y must"),
        ((2, 8, 4), (3, 8, 4), dict(window=0), "window"),
        ((2, 8, 4), (3, 8, 4), dict(window=-2), "window"),
        ((2, 8, 4), (3, 8, 4), dict(window=2.5), "window"),
        ((2, 8, 4), (3, 8, 4), dict(block_size=0), "block_size"),
    ],
)
def test_bad_input_raises(x_shape, y_shape, kwargs, name):
    with pytest.raises(ValueError, match=name):
        lsa.lsa_distance(np.ones(x_shape, np.float32), np.ones(y_shape, np.float32), **kwargs)


def test_non_finite_and_integer_inputs_raise():
    x = np.ones((2, 4, 3), np.float32)
    with pytest.raises(ValueError, match="x contains NaN"):
        lsa.lsa_distance(np.where(np.arange(3) == 1, np.nan, x).astype(np.float32), x)
    with pytest.raises(ValueError, match="y contains NaN"):
        lsa.lsa_distance(x, jnp.full((2, 4, 3), jnp.inf))
    with pytest.raises(ValueError, match="floating"):
        lsa.lsa_distance(x.astype(np.int32), x)


@pytest.mark.parametrize("window", [1, 4])
def test_aligned_normalisation_matches_algorithm_1_on_normalised_stripe_distances(window):
    """normalize=True: each stripe distance d counts as (e^d - 1) / (e^d + 1) (AlignedReID) in eqs. 3-5."""
    rng = np.random.default_rng(window)
    x, y = stripes(rng, 4, 8, 6) * 0.3, stripes(rng, 5, 8, 6) * 0.3
    got = np.asarray(lsa.lsa_distance(x, y, window, normalize=True))
    norm = lambda d: (np.exp(d) - 1) / (np.exp(d) + 1)
    expected = np.zeros((4, 5))
    for m in range(4):
        for n in range(5):
            d = np.linalg.norm(x[m][:, None] - y[n][None], axis=-1)
            band = np.abs(np.arange(8)[:, None] - np.arange(8)[None]) <= window // 2
            d = np.where(band, norm(d), np.inf)
            expected[m, n] = min(d.min(1).sum(), d.min(0).sum())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.max() < 8  # each of the k = 8 stripes contributes less than 1
    np.testing.assert_array_less(got, np.asarray(lsa.lsa_distance(x, y, window)))  # tanh(d/2) < d
