"""k-reciprocal re-ranking against the original algorithm written densely from its definition."""

import chex
import numpy as np
import pytest

from benchmarks.references import reference_re_ranking
from gldfa_jax import distances, rerank


def features(rng, n, clusters=None):
    centres = rng.normal(size=(7, 16)) * 2
    own = centres[rng.integers(0, 7, n)]
    return {
        "global": (own + rng.normal(size=(n, 16))).astype(np.float32),
        "local": (own[:, None, :8] + rng.normal(size=(n, 4, 8))).astype(np.float32),
    }


def dense_inputs(q, g, mode="global"):
    return (
        distances.pairwise_distance(q, g, mode),
        distances.pairwise_distance(q, q, mode),
        distances.pairwise_distance(g, g, mode),
    )


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (6, 3, 0.5), (4, 1, 0.0), (30, 1, 1.0)])
def test_matches_original_algorithm(k1, k2, lam):
    rng = np.random.default_rng(0)
    q, g = features(rng, 25), features(rng, 90)
    q_g, q_q, g_g = dense_inputs(q, g)
    expected = reference_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    got = rerank.re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    chex.assert_shape(got, (25, 90))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["global", "global+lsa"])
def test_lean_path_equals_dense(mode, monkeypatch):
    monkeypatch.setattr(rerank, "_PAIR_BUDGET", 500)  # force several Jaccard sub-blocks
    rng = np.random.default_rng(1)
    q, g = features(rng, 20), features(rng, 70)
    dense = rerank.re_ranking(*dense_inputs(q, g, mode), k1=8, k2=4)
    lean = rerank.re_ranking_features(q, g, mode, k1=8, k2=4, block_size=16)
    np.testing.assert_allclose(lean, dense, atol=1e-5)


def test_rerank_changes_and_keeps_order_sensible():
    rng = np.random.default_rng(2)
    q, g = features(rng, 10), features(rng, 40)
    q_g, q_q, g_g = dense_inputs(q, g)
    out = rerank.re_ranking(q_g, q_q, g_g, k1=6, k2=3, lambda_value=1.0)
    # λ = 1 leaves only the normalised squared distance: same ranking as the input.
    np.testing.assert_array_equal(np.argsort(out, 1, kind="stable")[:, :5], np.argsort(q_g, 1, kind="stable")[:, :5])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(k1=0), "k1"),
        (dict(k2=-1), "k2"),
        (dict(lambda_value=1.5), "lambda_value"),
        (dict(q_q_dist=np.zeros((3, 3))), "q_q_dist"),
        (dict(g_g_dist=np.zeros((4, 5))), "g_g_dist"),
        (dict(q_g_dist=np.full((2, 4), np.nan)), "q_g_dist"),
    ],
)
def test_bad_input_raises(kwargs, name):
    args = dict(q_g_dist=np.ones((2, 4)), q_q_dist=np.ones((2, 2)), g_g_dist=np.ones((4, 4)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        rerank.re_ranking(**args)


def test_tiny_sets_with_k1_larger_than_n():
    rng = np.random.default_rng(3)
    q, g = features(rng, 2), features(rng, 1)  # one gallery item, k1 + 1 > N
    q_g, q_q, g_g = dense_inputs(q, g)
    np.testing.assert_allclose(rerank.re_ranking(q_g, q_q, g_g), reference_re_ranking(q_g, q_q, g_g), atol=1e-6)
    np.testing.assert_allclose(rerank.re_ranking_features(q, g, "global"), rerank.re_ranking(q_g, q_q, g_g), atol=1e-5)


@pytest.mark.parametrize("mode", ["global", "global+lsa"])
def test_lean_path_from_the_evaluation_matrix_with_few_kept_neighbours(mode, monkeypatch):
    """q_g_dist reused, g×g tiles (the last one moved back, 70 = 4 × 16 + 6), and so few kept neighbours that
    expanded-set members beyond them are computed pair by pair."""
    monkeypatch.setattr(rerank, "_KEPT", 10)
    paired = []
    real = rerank._paired
    monkeypatch.setattr(rerank, "_paired", lambda *a, **kw: paired.append(1) or real(*a, **kw))
    rng = np.random.default_rng(4)
    q, g = features(rng, 20), features(rng, 70)
    q_g, q_q, g_g = dense_inputs(q, g, mode)
    dense = rerank.re_ranking(q_g, q_q, g_g, k1=8, k2=4)
    blocks = list(rerank.re_ranking_blocks(q, g, mode, q_g, k1=8, k2=4, block_size=16))
    assert [rows for rows, _ in blocks] == [slice(0, 16), slice(16, 20)]
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), dense, atol=1e-5)
    assert paired  # some expanded-set member lay beyond the 10 kept neighbours
    given = q_g.copy()
    np.testing.assert_allclose(rerank.re_ranking_features(q, g, mode, k1=8, k2=4, q_g_dist=given), dense, atol=1e-5)
    np.testing.assert_array_equal(given, q_g)  # a given matrix is not overwritten
    with pytest.raises(ValueError, match="q_g_dist"):
        next(rerank.re_ranking_blocks(q, g, mode, q_g[:, :5]))
