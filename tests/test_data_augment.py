"""Augmentation: flip / pad-crop / random-erasing statistics, normalisation, determinism at test time."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data_pipelines.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    augment_batch,
    augment_params,
    eval_transform,
    normalize,
)
from gldfa_jax.config import get_config

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)


def _naive_normalize(x):
    return (np.asarray(x, np.float64) / 255.0 - MEAN) / STD


def _naive_erase_rate(h, w, p, lo, hi, r, n=20000, tries=100, seed=0):
    """Zhong et al.'s loop, literally: probability that an image gets erased, and mean erased area fraction."""
    rng = np.random.default_rng(seed)
    erased, areas = 0, []
    for _ in range(n):
        if rng.random() >= p:
            continue
        for _ in range(tries):
            target = rng.uniform(lo, hi) * h * w
            aspect = rng.uniform(r, 1 / r)
            eh, ew = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if eh < h and ew < w:
                erased += 1
                areas.append(eh * ew / (h * w))
                break
    return erased / n, float(np.mean(areas))


def test_normalize_and_eval_transform_are_deterministic():
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 4, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(normalize(x)), _naive_normalize(x), rtol=1e-5, atol=1e-5)
    cfg = augment_params(get_config().data)
    a, b = eval_transform(x, cfg), eval_transform(x, cfg)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), _naive_normalize(x), rtol=1e-5, atol=1e-5)


def test_flip_statistics():
    n, h, w = 2000, 6, 4
    x = np.broadcast_to(np.arange(h * w * 3, dtype=np.uint8).reshape(1, h, w, 3) * 3, (n, h, w, 3))
    p = AugmentParams(flip_prob=0.5, erase_prob=0.0)
    y = np.asarray(augment_batch(jax.random.PRNGKey(0), x, p))
    plain, mirrored = _naive_normalize(x[0]), _naive_normalize(x[0][:, ::-1])
    is_plain = np.abs(y - plain).max(axis=(1, 2, 3)) < 1e-4
    is_mirror = np.abs(y - mirrored).max(axis=(1, 2, 3)) < 1e-4
    assert (is_plain ^ is_mirror).all()
    assert abs(is_mirror.mean() - 0.5) < 0.04  # 3.5 sigma for n = 2000
    # same key → same output; flip_prob 0 → identity
    np.testing.assert_array_equal(y, np.asarray(augment_batch(jax.random.PRNGKey(0), x, p)))
    y0 = np.asarray(augment_batch(jax.random.PRNGKey(1), x, p._replace(flip_prob=0.0)))
    assert np.abs(y0 - plain).max() < 1e-4


def test_random_erasing_statistics():
    n, h, w = 2000, 48, 16
    x = np.full((n, h, w, 3), 7, np.uint8)  # far from the fill value
    p = AugmentParams(flip_prob=0.0, erase_prob=0.5, erase_value="mean")
    y = np.asarray(augment_batch(jax.random.PRNGKey(3), x, p))
    fill = (np.array(p.mean) * 255 / 255 - MEAN) / STD  # the ImageNet mean normalises to 0
    erased = np.abs(y - fill).max(axis=-1) < 1e-4  # [n, h, w]
    any_erased = erased.any(axis=(1, 2))
    rate, mean_area = _naive_erase_rate(h, w, 0.5, 0.02, 0.4, 0.3)
    assert abs(any_erased.mean() - rate) < 0.04
    areas = []
    for m in erased[any_erased]:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        eh, ew = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert m.sum() == eh * ew and eh < h and ew < w  # one axis-aligned box inside the image
        assert 0.3 - 0.15 < eh / ew < 1 / 0.3 + 0.5  # aspect range (+ rounding)
        areas.append(eh * ew / (h * w))
    assert min(areas) >= 0.02 * 0.5 and max(areas) <= 0.4 * 1.2
    assert abs(np.mean(areas) - mean_area) < 0.015
    # boxes land everywhere: both image halves get erased
    assert erased[:, : h // 2].any() and erased[:, h // 2 :].any()


def test_random_fill_is_uniform_noise():
    x = np.zeros((400, 32, 16, 3), np.uint8)
    p = AugmentParams(flip_prob=0.0, erase_prob=1.0, erase_value="random")
    y = np.asarray(augment_batch(jax.random.PRNGKey(5), x, p))
    pix = (y * STD + MEAN) * 255.0
    noise = pix[pix > 0.5]
    assert noise.size > 1000 and abs(noise.mean() - 127.5) < 5 and noise.max() <= 255.01


def test_pad_crop_offsets():
    n, h, w, pad = 600, 6, 5, 2
    x = np.random.default_rng(1).integers(1, 256, (1, h, w, 3), dtype=np.uint8).repeat(n, 0)
    p = AugmentParams(flip_prob=0.0, erase_prob=0.0, pad=pad)
    y = np.asarray(augment_batch(jax.random.PRNGKey(2), x, p))
    padded = np.pad(x[0], ((pad, pad), (pad, pad), (0, 0)))
    offsets = set()
    for img in y:
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.abs(_naive_normalize(padded[dy : dy + h, dx : dx + w]) - img).max() < 1e-4
        ]
        assert found
        offsets.update(found)
    assert len(offsets) == (2 * pad + 1) ** 2


def test_config_reading_validation_and_jit():
    cfg = get_config().data
    p = augment_params(cfg)
    assert p.flip_prob == 0.5 and p.erase_area == (0.02, 0.4) and p.erase_value == "random"
    bad = ml_collections.ConfigDict(cfg.to_dict())
    bad.erase_area = (0.5, 0.2)
    with pytest.raises(ValueError, match="erase_area"):
        augment_params(bad)
    bad = ml_collections.ConfigDict(cfg.to_dict())
    bad.flip_prob = 1.5
    with pytest.raises(ValueError, match="flip_prob=1.5"):
        augment_params(bad)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        augment_batch(jax.random.PRNGKey(0), np.zeros((4, 4, 3), np.uint8), p)
    with pytest.raises(ValueError, match=r"params must be an AugmentParams, got ConfigDict; pass augment_params"):
        augment_batch(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 3), np.uint8), cfg)
    x = np.random.default_rng(0).integers(0, 256, (4, 16, 8, 3), dtype=np.uint8)
    f = jax.jit(lambda key, imgs: augment_batch(key, imgs, p))  # traceable inside a caller's jit
    out = f(jax.random.PRNGKey(0), jnp.asarray(x))
    assert out.shape == (4, 16, 8, 3) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(augment_batch(jax.random.PRNGKey(0), x, p)), atol=1e-5)
