"""Test-time distance modes and their blocked computation."""

import chex
import numpy as np
import pytest

from gldfa_jax import distances, lsa
from gldfa_jax.lsa import LSAOptions


def feats(rng, n, k=4, d=6):
    return {
        "global": rng.normal(size=(n, d)).astype(np.float32),
        "local": rng.normal(size=(n, k, d)).astype(np.float32),
        "final": rng.normal(size=(n, 2 * d)).astype(np.float32),
    }


def euclid(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))


@pytest.mark.parametrize("mode", distances.MODES)
def test_modes_match_definitions_and_blocking(mode):
    rng = np.random.default_rng(0)
    q, g = feats(rng, 11), feats(rng, 9)
    got = distances.pairwise_distance(q, g, mode, block_size=4)
    chex.assert_shape(got, (11, 9))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    expected = {
        "global": lambda: euclid(q["global"], g["global"]),
        "final": lambda: euclid(q["final"], g["final"]),
        "lsa": lambda: np.asarray(lsa.lsa_distance(q["local"], g["local"])),
        "global+lsa": lambda: euclid(q["global"], g["global"]) + np.asarray(lsa.lsa_distance(q["local"], g["local"])),
    }[mode]()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    blocks = list(distances.iter_distance_blocks(q, g, mode, block_size=4))
    assert [b.shape for _, b in blocks] == [(4, 9), (4, 9), (3, 9)]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), got)


def test_window_is_passed_to_lsa():
    rng = np.random.default_rng(1)
    q, g = feats(rng, 3), feats(rng, 5)
    hard = distances.pairwise_distance(q, g, "lsa", LSAOptions(window=1))
    expected = np.linalg.norm(q["local"][:, None] - g["local"][None], axis=-1).sum(-1)
    np.testing.assert_allclose(hard, expected, rtol=1e-5)


def test_missing_branch_and_bad_shapes_raise():
    rng = np.random.default_rng(2)
    q, g = feats(rng, 3), feats(rng, 4)
    with pytest.raises(ValueError, match="mode"):
        distances.pairwise_distance(q, g, "cosine")
    with pytest.raises(ValueError, match=r"g_feats\['local'\]"):
        distances.pairwise_distance(q, {"global": g["global"]}, "global+lsa")
    with pytest.raises(ValueError, match=r"q_feats\['global'\]"):
        distances.pairwise_distance({"global": q["local"]}, g, "global")
    with pytest.raises(ValueError, match="differ in feature shape"):
        distances.pairwise_distance(q, {"final": g["global"]}, "final")
    with pytest.raises(ValueError, match="number of images"):
        distances.pairwise_distance({"global": q["global"], "local": q["local"][:2]}, g, "global+lsa")
    with pytest.raises(ValueError, match="NaN"):
        distances.pairwise_distance({"global": np.full((2, 6), np.nan, np.float32)}, g, "global")
    with pytest.raises(ValueError, match="block_size"):
        list(distances.iter_distance_blocks(q, g, "global", block_size=0))


@pytest.mark.parametrize("mode", distances.MODES)
def test_device_blocks_and_paired_distance(mode):
    import jax

    rng = np.random.default_rng(3)
    q, g = feats(rng, 7), feats(rng, 7)
    full = distances.pairwise_distance(q, g, mode, block_size=3)
    blocks = list(distances.iter_distance_blocks(q, g, mode, block_size=3, to_host=False))
    assert all(isinstance(b, jax.Array) for _, b in blocks)
    # One shape for every block (one compile): the last one, a single query, carries two padding rows.
    assert [(r.start, r.stop, b.shape) for r, b in blocks] == [(0, 3, (3, 7)), (3, 6, (3, 7)), (6, 7, (3, 7))]
    np.testing.assert_array_equal(np.concatenate([jax.device_get(b)[: r.stop - r.start] for r, b in blocks]), full)
    paired = distances.paired_distance(jax.device_put(q), jax.device_put(g), mode, LSAOptions())
    np.testing.assert_allclose(jax.device_get(paired), np.diag(full), rtol=1e-5, atol=1e-4)


def test_mode_blocks_share_one_pass():
    rng = np.random.default_rng(4)
    q, g = feats(rng, 10), feats(rng, 6)
    modes = ("global+lsa", "global", "final")
    blocks = list(distances.iter_mode_blocks(q, g, modes, LSAOptions(window=2), block_size=9))
    assert [(r.start, r.stop) for r, _ in blocks] == [(0, 3), (3, 6), (6, 9), (9, 10)]  # 9 // 3 queries a block
    for mode in modes:
        chex.assert_shape(blocks[0][1][mode], (3, 6))
        np.testing.assert_allclose(
            np.concatenate([b[mode] for _, b in blocks]),
            distances.pairwise_distance(q, g, mode, LSAOptions(window=2)),
            rtol=1e-6,
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="modes"):
        list(distances.iter_mode_blocks(q, g, ()))
    with pytest.raises(ValueError, match="disagree on the number of images"):
        list(distances.iter_mode_blocks(dict(q, final=q["final"][:4]), g, ("global", "final")))
