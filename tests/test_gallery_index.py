"""Gallery index: FAISS shortlist + exact re-score against the dense distances, persistence, adding images,
refusing foreign indexes; the shortlist distance against the dense one."""

import dataclasses
import json
import os

import chex
import jax
import numpy as np
import pytest

from gldfa_jax import distances, gallery_index, lsa
from gldfa_jax.config import get_config
from gldfa_jax.lsa import LSAOptions

K_STRIPES, DIM = 4, 16


def clustered(rng, n, ids):
    """Re-ID-like features: one centre per identity plus noise; {"global" [n, 32], "local" [n, 4, 16]}."""
    pids = rng.integers(ids, size=n)
    centre_g = np.random.default_rng(7).normal(size=(ids, 32))
    centre_l = np.random.default_rng(8).normal(size=(ids, K_STRIPES, DIM))
    return {
        "global": (centre_g[pids] + 0.3 * rng.normal(size=(n, 32))).astype(np.float32),
        "local": (centre_l[pids] + 0.3 * rng.normal(size=(n, K_STRIPES, DIM))).astype(np.float32),
    }


def retrieval_config(**overrides):
    """The config's IndexOptions with `overrides`."""
    return dataclasses.replace(gallery_index.IndexOptions.from_config(get_config()), **overrides)


@pytest.mark.parametrize("mode", ["global", "lsa", "global+lsa", "final"])
@pytest.mark.parametrize("window,normalize", [(None, False), (1, False), (3, True), (8, False)])
def test_candidate_distance_equals_the_dense_distance(mode, window, normalize):
    rng = np.random.default_rng(0)
    q, g = clustered(rng, 3, 5), clustered(rng, 40, 5)
    q["final"], g["final"] = q["global"][:, :8], g["global"][:, :8]
    options = LSAOptions(window=window, normalize=normalize, weight=0.7)
    dense = distances.pairwise_distance(q, g, mode, options)
    keys = distances.required_keys(mode)
    one = jax.vmap(distances.candidate_distance, in_axes=(0, None, None, None))
    got = one({k: q[k] for k in keys}, {k: g[k] for k in keys}, mode, options)
    chex.assert_shape(got, (3, 40))
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        lsa.candidate_distance(q["local"][0], g["local"], window, normalize),
        lsa.lsa_distance(q["local"][:1], g["local"], window, normalize=normalize)[0],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "hnsw"])
def test_index_ranks_like_the_dense_distance(tmp_path, kind):
    """With the whole gallery probed and short-listed the index's ranking is the exact global+LSA ranking."""
    rng = np.random.default_rng(1)
    g, q = clustered(rng, 600, 30), clustered(rng, 5, 30)
    config = retrieval_config(index=kind, nlist=4, nprobe=4, shortlist=600, local_dtype="float32")
    index = gallery_index.create(str(tmp_path), config, "fp", g["global"], (K_STRIPES, DIM))
    index.add(g, [f"img{i}.jpg" for i in range(600)])
    index.save()
    assert index.manifest["index"]["type"] == kind
    top, ids = index.search(q, 10, config, "global+lsa", LSAOptions(window=2))
    chex.assert_shape([top, ids], (5, 10))
    dense = distances.pairwise_distance(q, g, "global+lsa", LSAOptions(window=2))
    expected = np.argsort(dense, axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, expected)])
    assert recall == 1.0 if kind != "hnsw" else recall >= 0.9  # HNSW's graph is approximate even fully searched
    np.testing.assert_allclose(top, np.take_along_axis(dense, ids, 1), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(top, axis=1) >= 0)


def test_saved_index_reopens_grows_and_refuses_foreign_features(tmp_path):
    rng = np.random.default_rng(2)
    g, q = clustered(rng, 400, 20), clustered(rng, 4, 20)
    config = retrieval_config(index="ivf_flat", nlist=3, nprobe=3, shortlist=400)  # float16 stripes
    folder = str(tmp_path / "index")
    index = gallery_index.create(folder, config, "weights A, global 32", g["global"][:200], (K_STRIPES, DIM))
    index.add({k: v[:200] for k, v in g.items()}, [f"a{i}" for i in range(200)])
    index.save()
    before_add = index.search(q, 5, config)
    with pytest.raises(ValueError, match="already holds a gallery index"):
        gallery_index.create(folder, config, "weights A, global 32", g["global"], (K_STRIPES, DIM))

    reopened = gallery_index.open_index(folder, "weights A, global 32")
    np.testing.assert_array_equal(reopened.search(q, 5, config)[1], before_add[1])
    reopened.add({k: v[200:] for k, v in g.items()}, [f"b{i}" for i in range(200)])  # no retraining
    reopened.save()
    grown = gallery_index.open_index(folder, "weights A, global 32")
    assert grown.size == 400 and grown.paths[:2] == ["a0", "a1"] and grown.paths[-1] == "b199"
    assert grown.manifest["index"]["trained_on"] == 200
    top, ids = grown.search(q, 10, config)
    dense = distances.pairwise_distance(q, g, "global+lsa")
    np.testing.assert_allclose(top, np.take_along_axis(dense, ids, 1), rtol=2e-3)  # float16 stripes
    stored = grown.candidate_features(np.array([[250]]))
    assert stored["local"].dtype == np.float16
    np.testing.assert_allclose(stored["local"][0, 0], g["local"][250], atol=2e-3)

    with pytest.raises(ValueError, match=r"index \[weights A, global 32\], this model \[weights B, global 32\]"):
        gallery_index.open_index(folder, "weights B, global 32")
    with pytest.raises(ValueError, match="features\\['global'\\] must be"):
        grown.add({"global": g["global"][:3, :8], "local": g["local"][:3]}, ["x", "y", "z"])
    with pytest.raises(ValueError, match="cannot re-score"):
        grown.search(q, 5, config, mode="final")
    manifest = json.load(open(os.path.join(folder, gallery_index.MANIFEST)))
    manifest["size"] = 399
    json.dump(manifest, open(os.path.join(folder, gallery_index.MANIFEST), "w"))
    with pytest.raises(ValueError, match="inconsistent"):
        gallery_index.open_index(folder)
    with pytest.raises(ValueError, match="holds no gallery index"):
        gallery_index.open_index(str(tmp_path / "none"))


def test_fingerprint_names_weights_and_feature_shapes():
    variables = {"params": {"w": np.ones((2, 3), np.float32)}}
    same = gallery_index.fingerprint({"params": {"w": np.ones((2, 3), np.float32)}}, 256, (8, 256))
    assert gallery_index.fingerprint(variables, 256, (8, 256)) == same and same.endswith("global 256, local 8x256")
    assert gallery_index.fingerprint({"params": {"w": np.zeros((2, 3), np.float32)}}, 256, (8, 256)) != same
    assert gallery_index.fingerprint(variables, 128, (8, 256)) != same


def test_ivf_lists_follow_the_gallery_size():
    config = retrieval_config()
    assert gallery_index.ivf_lists(config, 1_000_000) == 4000
    assert gallery_index.ivf_lists(config, 1000) == 25  # at least 39 training points a list
    assert gallery_index.ivf_lists(config, 10) == 1
    assert gallery_index.ivf_lists(config, 1_000_000, num_train=262_144) == 4000  # sized for the gallery
    assert gallery_index.ivf_lists(config, 1_000_000, num_train=39_000) == 1000  # ... as its sample allows
    assert gallery_index.ivf_lists(retrieval_config(nlist=64), 100_000) == 64
    with pytest.raises(ValueError, match="retrieval.index='ivf_pq'; choose one of"):
        retrieval_config(index="ivf_pq")
    with pytest.raises(ValueError, match="retrieval.nprobe must be an integer >= 1, got 0"):
        retrieval_config(nprobe=0)
