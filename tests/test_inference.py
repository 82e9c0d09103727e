"""Inference: batched feature extraction (padding, flip averaging) and the results dict."""
import chex
import jax
import numpy as np
import pytest

from data_pipelines.augment import normalize
from experiments import base
from gldfa_jax import inference, train
from gldfa_jax.experiment_data import Split
from gldfa_jax.model import build_model, test_features


@pytest.fixture(scope="module")
def tiny():
    c = base.get_config()
    c.data.height, c.data.width = 32, 16
    c.model.depth, c.model.width_multiplier, c.model.embed_dim, c.model.num_stripes = 18, 0.125, 8, 4
    model = build_model(c.model, 3)
    variables = train.init_variables(model, jax.random.PRNGKey(0), (32, 16, 3))
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 16, 3), dtype=np.uint8)
    return c, model, variables, images


def test_extract_features_shapes_padding_and_flip(tiny):
    c, model, variables, images = tiny
    feats = inference.extract_features(model, variables, images, c.data, batch_size=4, flip=False)
    chex.assert_shape([feats["global"], feats["local"], feats["final"]], [(5, 8), (5, 4, 8), (5, 8 * 5)])
    # Naive reference: each image through the network on its own.
    x = np.asarray(normalize(images, c.data.mean, c.data.std))
    ref = [test_features(model.apply(variables, x[i:i + 1], train=False)) for i in range(5)]
    mirrored = [test_features(model.apply(variables, x[i:i + 1, :, ::-1], train=False)) for i in range(5)]
    for key in feats:
        np.testing.assert_allclose(feats[key], np.concatenate([r[key] for r in ref]), rtol=1e-4, atol=1e-5)
    flipped = inference.extract_features(model, variables, images, c.data, batch_size=4, flip=True)
    for key in flipped:
        expect = np.concatenate([(r[key] + m[key]) / 2 for r, m in zip(ref, mirrored)])
        np.testing.assert_allclose(flipped[key], expect, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="images must be"):
        inference.extract_features(model, variables, images[..., 0], c.data)


def test_evaluate_features_reports_percent_per_mode_and_rerank():
    c = base.get_config()
    c.eval.k1, c.eval.k2 = 3, 2  # tiny gallery
    rng = np.random.default_rng(0)
    ids = np.arange(6)
    centres = {"global": rng.normal(size=(6, 4)), "local": rng.normal(size=(6, 8, 4)), "final": rng.normal(size=(6, 9))}
    g_ids = np.repeat(ids, 2)
    g = {k: (v[g_ids] + 0.01 * rng.normal(size=v[g_ids].shape)).astype(np.float32) for k, v in centres.items()}
    q = {k: v.astype(np.float32) for k, v in centres.items()}
    query = Split(np.zeros((6, 1, 1, 3), np.uint8), ids, np.zeros(6, np.int64))
    gallery = Split(np.zeros((12, 1, 1, 3), np.uint8), g_ids, np.ones(12, np.int64))
    results = inference.evaluate_features(q, g, query, gallery, c)
    assert list(results) == ["global", "lsa", "global+lsa", "final", "global+rerank", "lsa+rerank",
                             "global+lsa+rerank", "final+rerank"]
    for r in results.values():  # every query's two true matches are its nearest neighbours
        assert r == {"mAP": 100.0, "rank1": 100.0, "rank5": 100.0, "rank10": 100.0}
    del q["local"]  # a model without the local branch: modes needing it are skipped
    assert list(inference.evaluate_features(q, g, query, gallery, c)) == ["global", "final", "global+rerank",
                                                                         "final+rerank"]
    assert "mAP" in inference.format_table(results) and "global+lsa+rerank" in inference.format_table(results)


def test_rerank_of_a_large_gallery_goes_lean_with_the_same_results():
    c = base.get_config()
    c.eval.k1, c.eval.k2 = 4, 2
    rng = np.random.default_rng(1)
    g_ids = np.repeat(np.arange(10), 3)
    centres = {"global": rng.normal(size=(10, 4)), "local": rng.normal(size=(10, 8, 4))}
    g = {k: (v[g_ids] + 0.8 * rng.normal(size=v[g_ids].shape)).astype(np.float32) for k, v in centres.items()}
    q = {k: (v + 0.8 * rng.normal(size=v.shape)).astype(np.float32) for k, v in centres.items()}
    query = Split(np.zeros((10, 1, 1, 3), np.uint8), np.arange(10), np.zeros(10, np.int64))
    gallery = Split(np.zeros((30, 1, 1, 3), np.uint8), g_ids, np.ones(30, np.int64))
    dense = inference.evaluate_features(q, g, query, gallery, c)
    c.eval.rerank_dense_max = 0  # every evaluation counts as large
    lean = inference.evaluate_features(q, g, query, gallery, c)
    assert list(lean) == list(dense)
    assert dense["global+lsa+rerank"]["mAP"] < 100.0  # noisy enough that re-ranking has work to do
    for mode in dense:
        for metric, value in dense[mode].items():
            assert lean[mode][metric] == pytest.approx(value, abs=1e-6), (mode, metric)
