"""Test-time features (gldfa_jax.features): batched extraction, padding, flip averaging."""

import chex
import jax
import numpy as np
import pytest

from data_pipelines.augment import normalize
from gldfa_jax import config as base
from gldfa_jax import features, train
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
    feats = features.extract_features(model, variables, images, c.data, batch_size=4, flip=False)
    chex.assert_shape([feats["global"], feats["local"], feats["final"]], [(5, 8), (5, 4, 8), (5, 8 * 5)])
    # Naive reference: each image through the network on its own.
    x = np.asarray(normalize(images, c.data.mean, c.data.std))
    ref = [test_features(model.apply(variables, x[i : i + 1], train=False)) for i in range(5)]
    mirrored = [test_features(model.apply(variables, x[i : i + 1, :, ::-1], train=False)) for i in range(5)]
    for key in feats:
        np.testing.assert_allclose(feats[key], np.concatenate([r[key] for r in ref]), rtol=1e-4, atol=1e-5)
    flipped = features.extract_features(model, variables, images, c.data, batch_size=4, flip=True)
    for key in flipped:
        expect = np.concatenate([(r[key] + m[key]) / 2 for r, m in zip(ref, mirrored)])
        np.testing.assert_allclose(flipped[key], expect, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="images must be"):
        features.extract_features(model, variables, images[..., 0], c.data)
