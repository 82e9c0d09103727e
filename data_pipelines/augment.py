"""Training augmentation (§4.1) as one jit-compiled batched JAX function over uint8 images.

Order (strong-baseline recipe): horizontal flip → optional zero-pad + random crop → random erasing → ImageNet
normalisation. Random erasing follows Zhong et al. (AAAI 2020): with probability p, up to 100 tries of an area
fraction U(a_lo, a_hi) and aspect U(r, 1/r), accepted if it fits inside the image; the box is filled with
per-pixel uniform noise in [0, 255] ("random", their RE-R; one noise field per batch) or the ImageNet mean
("mean", which becomes 0 after normalisation, as in the strong-baseline code).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

ERASE_TRIES = 100  # Zhong et al.: give up (no erasing) after 100 rejected boxes
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AugmentParams(NamedTuple):
    """Hashable augmentation settings (static under jit)."""

    flip_prob: float = 0.5
    pad: int = 0
    erase_prob: float = 0.5
    erase_area: tuple = (0.02, 0.4)
    erase_aspect: float = 0.3
    erase_value: str = "random"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


def augment_params(data_config) -> AugmentParams:
    """AugmentParams from ``config.data`` (reads flip_prob, pad, erase_prob, erase_area, erase_aspect,
    erase_value (optional, default "random"), mean, std) and validates them."""
    if isinstance(data_config, AugmentParams):
        p = data_config
    else:
        get = data_config.get
        d = AugmentParams()
        p = AugmentParams(
            flip_prob=float(get("flip_prob", d.flip_prob)),
            pad=int(get("pad", d.pad)),
            erase_prob=float(get("erase_prob", d.erase_prob)),
            erase_area=tuple(float(a) for a in get("erase_area", d.erase_area)),
            erase_aspect=float(get("erase_aspect", d.erase_aspect)),
            erase_value=str(get("erase_value", d.erase_value)),
            mean=tuple(float(m) for m in get("mean", d.mean)),
            std=tuple(float(s) for s in get("std", d.std)),
        )
    for name in ("flip_prob", "erase_prob"):
        if not 0.0 <= getattr(p, name) <= 1.0:
            raise ValueError(f"data.{name}={getattr(p, name)} must lie in [0, 1]")
    if p.pad < 0:
        raise ValueError(f"data.pad={p.pad} must be >= 0 (pixels of zero padding before the random crop)")
    lo, hi = p.erase_area
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"data.erase_area={p.erase_area} must satisfy 0 < low <= high < 1 (fractions of the area)")
    if not 0.0 < p.erase_aspect <= 1.0:
        raise ValueError(f"data.erase_aspect={p.erase_aspect} must lie in (0, 1]; aspects span [r, 1/r]")
    if p.erase_value not in ("random", "mean"):
        raise ValueError(f"data.erase_value={p.erase_value!r} must be 'random' or 'mean'")
    if len(p.mean) != 3 or len(p.std) != 3 or min(p.std) <= 0:
        raise ValueError(f"data.mean={p.mean} / data.std={p.std} must be 3 values each, std > 0")
    return p


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (or float in [0, 255]) [..., 3] → float32 (x / 255 - mean) / std. Deterministic (test time)."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def flip_horizontal(images):
    """[B, H, W, C] mirrored left-right (for flip-averaged test features)."""
    return images[:, :, ::-1]


def _random_crop(key, x, pad):
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
    crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, x.shape[-1]))
    return jax.vmap(crop)(padded, offsets)


def erase_boxes(key, shape, p: AugmentParams):
    """Per image: (erase? bool [B], top, left, height, width int32 [B]) drawn as in Zhong et al."""
    b, h, w = shape
    k_do, k_area, k_aspect, k_top, k_left = jax.random.split(key, 5)
    lo, hi = p.erase_area
    area = jax.random.uniform(k_area, (b, ERASE_TRIES), minval=lo, maxval=hi) * (h * w)
    aspect = jax.random.uniform(k_aspect, (b, ERASE_TRIES), minval=p.erase_aspect, maxval=1.0 / p.erase_aspect)
    eh = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    ew = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (eh < h) & (ew < w)
    first = jnp.argmax(fits, axis=1)  # first accepted try
    pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]
    eh, ew = pick(eh), pick(ew)
    do = (jax.random.uniform(k_do, (b,)) < p.erase_prob) & fits.any(axis=1)
    top = jnp.floor(jax.random.uniform(k_top, (b,)) * (h - eh + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(k_left, (b,)) * (w - ew + 1)).astype(jnp.int32)
    return do, top, left, eh, ew


def _augment(rng, images, p: AugmentParams):
    k_flip, k_crop, k_erase, k_noise = jax.random.split(rng, 4)
    x = jnp.asarray(images, jnp.float32)
    b, h, w, _ = x.shape
    flip = jax.random.uniform(k_flip, (b,)) < p.flip_prob
    x = jnp.where(flip[:, None, None, None], flip_horizontal(x), x)
    if p.pad > 0:
        x = _random_crop(k_crop, x, p.pad)
    if p.erase_prob > 0:
        do, top, left, eh, ew = erase_boxes(k_erase, (b, h, w), p)
        rows = jnp.arange(h)[None, :, None]
        cols = jnp.arange(w)[None, None, :]
        inside = (
            (rows >= top[:, None, None])
            & (rows < (top + eh)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + ew)[:, None, None])
            & do[:, None, None]
        )
        if p.erase_value == "random":
            # One field of i.i.d. uniform 0-255 pixels per batch, cut differently by each image's box: drawing
            # a field per image costs ~40x the rest of the augmentation on a CPU.
            fill = jax.random.bits(k_noise, (1, h, w, 3), jnp.uint8).astype(jnp.float32)
        else:
            fill = jnp.broadcast_to(jnp.asarray(p.mean, jnp.float32) * 255.0, x.shape)
        x = jnp.where(inside[..., None], fill, x)
    return normalize(x, p.mean, p.std)


_augment_jit = jax.jit(_augment, static_argnums=2)
_normalize_jit = jax.jit(normalize, static_argnums=(1, 2))


def augment_batch(rng, images_uint8, params: AugmentParams):
    """Training augmentation: uint8 [B, H, W, 3] → float32 normalised [B, H, W, 3].

    ``params`` from ``augment_params(config.data)``. Compiled once per (shape, settings); also traceable inside a
    caller's jit/pmap.
    """
    if not isinstance(params, AugmentParams):
        raise ValueError(
            f"params must be an AugmentParams, got {type(params).__name__}; pass augment_params(config.data)."
        )
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {images_uint8.shape}")
    return _augment_jit(rng, images_uint8, params)


def eval_transform(images_uint8, params: AugmentParams):
    """Test-time transform: normalise only (images were resized at decode time). Deterministic."""
    return _normalize_jit(images_uint8, params.mean, params.std)
