"""WorldConfig (the world's size and difficulty), its presets and the checks on it."""

from __future__ import annotations

from typing import NamedTuple

from data_pipelines.datasets.common import PUBLISHED_STATS
from data_pipelines.synthetic.render import MARGIN


class WorldConfig(NamedTuple):
    identities: int = 150
    cameras: int = 4
    min_cameras: int = 2  # cameras each identity is seen by, at least
    max_cameras: int = 0  # ... and at most (0: all cameras)
    images_per_camera: tuple = (2, 6)  # per identity and camera (inclusive range)
    height: int = 128
    width: int = 64
    misalign_rate: float = 0.3  # fraction of boxes shifted or cut vertically
    max_shift: float = 0.3  # up to 30 % of the box height
    occlusion_rate: float = 0.15  # fraction of images with an occluder
    train_fraction: float = 0.5  # identities used for training; the rest form query + gallery
    jpeg_quality: tuple = (75, 95)
    # (train identities, train images, query images, gallery images), met exactly (train_fraction is then
    # unused); (): drawn from the ranges above
    sizes: tuple = ()


_MSMT17 = PUBLISHED_STATS["msmt17"]
PRESETS = {
    "default": {},  # WorldConfig's defaults: 150 identities, 4 cameras, about 1,700 images
    # MSMT17's split sizes over 15 cameras (about 126k images). A test identity has one query per camera that
    # sees it, so 11,659 queries / 3,060 identities = 3.8 cameras per identity: 2..6; 8 boxes per camera on average.
    "msmt17": dict(
        identities=_MSMT17["train"][0] + _MSMT17["query"][0],
        cameras=15,
        max_cameras=6,
        images_per_camera=(2, 14),
        sizes=(_MSMT17["train"][0], _MSMT17["train"][1], _MSMT17["query"][1], _MSMT17["gallery"][1]),
    ),
}


def world_config(preset: str = "default", **options) -> WorldConfig:
    """The WorldConfig of ``preset`` with ``options`` (WorldConfig fields; None keeps the preset's value)."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not known; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(options) - set(WorldConfig._fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; choose from {WorldConfig._fields}")
    return WorldConfig(**{**PRESETS[preset], **{k: v for k, v in options.items() if v is not None}})


def camera_range(cfg: WorldConfig) -> tuple:
    """(fewest, most) cameras that see one identity."""
    return cfg.min_cameras, cfg.max_cameras or cfg.cameras


def train_count(cfg: WorldConfig) -> int:
    """Number of train identities."""
    if cfg.sizes:
        return cfg.sizes[0]
    return max(2, min(cfg.identities - 2, int(round(cfg.train_fraction * cfg.identities))))


def train_pairs(cfg: WorldConfig) -> tuple:
    """(fewest, most, planned) (identity, camera) pairs that can hold ``sizes``' train images."""
    (c_lo, c_hi), (lo, hi) = camera_range(cfg), cfg.images_per_camera
    n_ids, images = cfg.sizes[:2]
    fewest, most = max(n_ids * c_lo, -(-images // hi)), min(n_ids * c_hi, images // lo)
    return fewest, most, min(most, max(fewest, int(round(images / ((lo + hi) / 2)))))


def validate(cfg: WorldConfig) -> None:
    """Raises ValueError naming the field when ``cfg`` cannot make a world with the re-ID protocol."""
    if cfg.identities < 4:
        raise ValueError(f"identities={cfg.identities} must be >= 4 (two for training, two for testing)")
    if cfg.cameras < 2:
        raise ValueError(f"cameras={cfg.cameras} must be >= 2 (queries are matched across cameras)")
    if not 2 <= cfg.min_cameras <= cfg.cameras:
        raise ValueError(f"min_cameras={cfg.min_cameras} must lie in 2..cameras={cfg.cameras}")
    if cfg.max_cameras and not cfg.min_cameras <= cfg.max_cameras <= cfg.cameras:
        raise ValueError(
            f"max_cameras={cfg.max_cameras} must lie in min_cameras={cfg.min_cameras}.."
            f"cameras={cfg.cameras} (or 0: all cameras)"
        )
    lo, hi = cfg.images_per_camera
    if not 2 <= lo <= hi:
        raise ValueError(f"images_per_camera={cfg.images_per_camera} needs 2 <= low <= high (one query + gallery)")
    if cfg.height < 32 or cfg.width < 16:
        raise ValueError(f"height={cfg.height}, width={cfg.width}: use at least 32x16")
    for name in ("misalign_rate", "occlusion_rate"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name}={getattr(cfg, name)} must lie in [0, 1]")
    if not 0.05 <= cfg.max_shift <= MARGIN:
        raise ValueError(f"max_shift={cfg.max_shift} must lie in [0.05, {MARGIN}]")
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ValueError(f"train_fraction={cfg.train_fraction} must lie in (0, 1)")
    if cfg.sizes:
        _validate_sizes(cfg)


def _validate_sizes(cfg: WorldConfig) -> None:
    if len(cfg.sizes) != 4:
        raise ValueError(f"sizes={cfg.sizes} needs (train identities, train images, query images, gallery images)")
    n_train, _, query, gallery = cfg.sizes
    (c_lo, c_hi), (lo, hi) = camera_range(cfg), cfg.images_per_camera
    n_test = cfg.identities - n_train
    if not 2 <= n_train <= cfg.identities - 2:
        raise ValueError(f"sizes[0]={n_train} train identities must lie in 2..identities-2={cfg.identities - 2}")
    if not n_test * c_lo <= query <= n_test * c_hi:
        raise ValueError(
            f"sizes[2]={query} query images: each of the {n_test} test identities has one per camera "
            f"that sees it ({c_lo}..{c_hi}), so it must lie in {n_test * c_lo}..{n_test * c_hi}; "
            f"change min_cameras/max_cameras or the sizes"
        )
    if not query * (lo - 1) <= gallery <= query * (hi - 1):
        raise ValueError(
            f"sizes[3]={gallery} gallery images must lie in {query * (lo - 1)}..{query * (hi - 1)} "
            f"(images_per_camera={cfg.images_per_camera} minus the query, per query); change "
            f"images_per_camera or the sizes"
        )
    fewest, most, _ = train_pairs(cfg)
    if fewest > most:
        raise ValueError(
            f"sizes[1]={cfg.sizes[1]} train images cannot be spread over {n_train} identities seen by "
            f"{c_lo}..{c_hi} cameras with images_per_camera={cfg.images_per_camera}; change the sizes "
            f"or those ranges"
        )
