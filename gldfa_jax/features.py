"""Test-time features (paper §3.2 inference): uint8 images in, the model's Features out, batch by batch.

Features are {"global": [N, d], "local": [N, k, d], "final": [N, D]} float32 (a model without a branch lacks its
key); gldfa_jax.evaluation compares them, gldfa_jax.export traces `image_features`.
"""

import jax
import numpy as np
from tqdm import tqdm

from data_pipelines.augment import normalize
from gldfa_jax.model import test_features


def image_features(variables, images, model, flip: bool, mean: tuple, std: tuple) -> dict:
    """uint8 images [B, H, W, 3] -> Features dict of [B, ...] float32: what evaluation compares (and what
    gldfa_jax.export traces)."""
    x = normalize(images, mean, std)
    feats = test_features(model.apply(variables, x, train=False))
    if flip:
        flipped = test_features(model.apply(variables, x[:, :, ::-1], train=False))
        feats = {k: (v + flipped[k]) / 2.0 for k, v in feats.items()}
    return feats


# Compiled once per model and shape.
_features = jax.jit(image_features, static_argnames=("model", "flip", "mean", "std"))


def extract_features(
    model,
    variables,
    images: np.ndarray,
    data_config,
    batch_size: int = 128,
    flip: bool | None = None,
    desc: str = "features",
) -> dict:
    """uint8 images [N, H, W, 3] -> Features {"global": [N, d], "local": [N, k, d], "final": [N, D]} (numpy).

    `flip` (default `data_config.test_flip`) averages each feature with that of the mirrored image. Every batch
    is padded to `batch_size` so the network compiles once per image size.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] uint8, got shape {images.shape}.")
    flip = bool(data_config.test_flip if flip is None else flip)
    variables = jax.device_put(variables)  # once, not with every batch (a no-op when already on the device)
    statics = dict(model=model, flip=flip, mean=tuple(data_config.mean), std=tuple(data_config.std))
    n = images.shape[0]
    chunks = []
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        batch = images[start : start + batch_size]
        real = batch.shape[0]
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real,) + batch.shape[1:], batch.dtype)])
        feats = jax.device_get(_features(variables, jax.device_put(batch), **statics))
        chunks.append({k: v[:real] for k, v in feats.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def split_features(model, variables, query, gallery, config) -> tuple:
    """Features of the query and gallery splits (objects with .images uint8 [N, H, W, 3]) -> (q_feats, g_feats)."""
    kw = dict(batch_size=config.eval.batch_size, flip=config.data.test_flip)
    q_feats = extract_features(model, variables, query.images, config.data, desc="query features", **kw)
    g_feats = extract_features(model, variables, gallery.images, config.data, desc="gallery features", **kw)
    return q_feats, g_feats
