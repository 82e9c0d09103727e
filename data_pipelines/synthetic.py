"""A synthetic re-ID world: procedurally drawn people seen by several cameras, written in Market-1501 layout.

Identity = a combination of part prototypes (upper-body outfit, lower-body outfit, head, accessories) drawn from
shared pools, so every part is worn by several identities and only the combination identifies a person
(identities differ in at least two parts). Cameras differ in background, illumination, colour cast, blur,
noise, JPEG quality and viewpoint mix; the view changes what is visible (logo on the front only, backpack body
on the back, profile from the side). Per image: pose jitter (position, scale, gait), and at controllable rates
detector errors (box shifted or cut vertically by up to ``max_shift`` of its height, then re-stretched) and
occluders (drawn by data_pipelines.synthetic_render). This module plans the world (identities, cameras, who is
seen where and how often, file names) and writes it, rendering in a process pool. Deterministic from the seed
and independent of the number of processes: each image draws from its own generator seeded by
(seed, pid, camera, index), and the plan (frame numbers included) is drawn up front.

CLI: ``python -m data_pipelines.synthetic --out DIR [--preset default|msmt17] [--identities N] [--seed S]``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_pipelines.datasets.common import PUBLISHED_STATS
from data_pipelines.synthetic_render import (BAGS, CLOTH, HAIR, HAIR_STYLES, LOGOS, LOWER_TYPES, MARGIN, PATTERNS,
                                             SHOES, SKIN, render_image)

MANIFEST = "synthetic_manifest.json"


class WorldConfig(NamedTuple):
    identities: int = 150
    cameras: int = 4
    min_cameras: int = 2          # cameras each identity is seen by, at least
    max_cameras: int = 0          # ... and at most (0: all cameras)
    images_per_camera: tuple = (2, 6)  # per identity and camera (inclusive range)
    height: int = 128
    width: int = 64
    misalign_rate: float = 0.3    # fraction of boxes shifted or cut vertically
    max_shift: float = 0.3        # up to 30 % of the box height
    occlusion_rate: float = 0.15  # fraction of images with an occluder
    train_fraction: float = 0.5   # identities used for training; the rest form query + gallery
    jpeg_quality: tuple = (75, 95)
    # (train identities, train images, query images, gallery images), met exactly (train_fraction is then
    # unused); (): drawn from the ranges above
    sizes: tuple = ()


_MSMT17 = PUBLISHED_STATS["msmt17"]
PRESETS = {
    "default": {},  # WorldConfig's defaults: 150 identities, 4 cameras, about 1,700 images
    # MSMT17's split sizes over 15 cameras (about 126k images). A test identity has one query per camera that
    # sees it, so 11,659 queries / 3,060 identities = 3.8 cameras per identity: 2..6; 8 boxes per camera on average.
    "msmt17": dict(identities=_MSMT17["train"][0] + _MSMT17["query"][0], cameras=15, max_cameras=6,
                   images_per_camera=(2, 14),
                   sizes=(_MSMT17["train"][0], _MSMT17["train"][1], _MSMT17["query"][1], _MSMT17["gallery"][1])),
}


def world_config(preset: str = "default", **options) -> WorldConfig:
    """The WorldConfig of ``preset`` with ``options`` (WorldConfig fields; None keeps the preset's value)."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not known; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(options) - set(WorldConfig._fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; choose from {WorldConfig._fields}")
    return WorldConfig(**{**PRESETS[preset], **{k: v for k, v in options.items() if v is not None}})


def _camera_range(cfg: WorldConfig) -> tuple:
    return cfg.min_cameras, cfg.max_cameras or cfg.cameras


def _train_count(cfg: WorldConfig) -> int:
    if cfg.sizes:
        return cfg.sizes[0]
    return max(2, min(cfg.identities - 2, int(round(cfg.train_fraction * cfg.identities))))


def _train_pairs(cfg: WorldConfig) -> tuple:
    """(fewest, most, planned) (identity, camera) pairs that can hold ``sizes``' train images."""
    (c_lo, c_hi), (lo, hi) = _camera_range(cfg), cfg.images_per_camera
    n_ids, images = cfg.sizes[:2]
    fewest, most = max(n_ids * c_lo, -(-images // hi)), min(n_ids * c_hi, images // lo)
    return fewest, most, min(most, max(fewest, int(round(images / ((lo + hi) / 2)))))


def _validate(cfg: WorldConfig) -> None:
    if cfg.identities < 4:
        raise ValueError(f"identities={cfg.identities} must be >= 4 (two for training, two for testing)")
    if cfg.cameras < 2:
        raise ValueError(f"cameras={cfg.cameras} must be >= 2 (queries are matched across cameras)")
    if not 2 <= cfg.min_cameras <= cfg.cameras:
        raise ValueError(f"min_cameras={cfg.min_cameras} must lie in 2..cameras={cfg.cameras}")
    if cfg.max_cameras and not cfg.min_cameras <= cfg.max_cameras <= cfg.cameras:
        raise ValueError(f"max_cameras={cfg.max_cameras} must lie in min_cameras={cfg.min_cameras}.."
                         f"cameras={cfg.cameras} (or 0: all cameras)")
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
    (c_lo, c_hi), (lo, hi) = _camera_range(cfg), cfg.images_per_camera
    n_test = cfg.identities - n_train
    if not 2 <= n_train <= cfg.identities - 2:
        raise ValueError(f"sizes[0]={n_train} train identities must lie in 2..identities-2={cfg.identities - 2}")
    if not n_test * c_lo <= query <= n_test * c_hi:
        raise ValueError(f"sizes[2]={query} query images: each of the {n_test} test identities has one per camera "
                         f"that sees it ({c_lo}..{c_hi}), so it must lie in {n_test * c_lo}..{n_test * c_hi}; "
                         f"change min_cameras/max_cameras or the sizes")
    if not query * (lo - 1) <= gallery <= query * (hi - 1):
        raise ValueError(f"sizes[3]={gallery} gallery images must lie in {query * (lo - 1)}..{query * (hi - 1)} "
                         f"(images_per_camera={cfg.images_per_camera} minus the query, per query); change "
                         f"images_per_camera or the sizes")
    fewest, most, _ = _train_pairs(cfg)
    if fewest > most:
        raise ValueError(f"sizes[1]={cfg.sizes[1]} train images cannot be spread over {n_train} identities seen by "
                         f"{c_lo}..{c_hi} cameras with images_per_camera={cfg.images_per_camera}; change the sizes "
                         f"or those ranges")


# ----------------------------------------------------------------------------------------------- identities
def _pool(rng, size, sampler):
    """``size`` distinct prototypes drawn with ``sampler(rng) -> tuple``."""
    seen, out = set(), []
    for _ in range(size * 200):
        t = sampler(rng)
        if t not in seen:
            seen.add(t)
            out.append(t)
            if len(out) == size:
                break
    return out


def _upper(rng):
    c = int(rng.integers(len(CLOTH)))
    c2 = int((c + rng.integers(1, len(CLOTH))) % len(CLOTH))  # secondary colour differs from the main one
    return (c, c2, int(rng.integers(len(PATTERNS))), int(rng.integers(2)), int(rng.integers(len(LOGOS))),
            int(rng.integers(len(CLOTH))))


def _lower(rng):
    return (int(rng.integers(len(CLOTH))), int(rng.choice(len(LOWER_TYPES), p=[0.6, 0.25, 0.15])))


def _head(rng):
    return (int(rng.integers(len(SKIN))), int(rng.integers(len(HAIR))), int(rng.integers(len(HAIR_STYLES))),
            int(rng.integers(len(CLOTH))))


def _accessory(rng):
    return (int(rng.choice(len(BAGS), p=[0.4, 0.35, 0.25])), int(rng.integers(len(CLOTH))),
            int(rng.integers(len(SHOES))))


def make_identities(n: int, rng: np.random.Generator) -> list:
    """``n`` identities as dicts of part prototypes: each part shared by ~3-5 identities, combinations
    pairwise different in at least two of the four parts."""
    # a pool never asks for more prototypes than its sampler can draw (large worlds: lower body, accessories)
    pools = [_pool(rng, min(max(3, n // d), space), sampler) for sampler, d, space in (
        (_upper, 3, len(CLOTH) * (len(CLOTH) - 1) * len(PATTERNS) * 2 * len(LOGOS) * len(CLOTH)),
        (_lower, 4, len(CLOTH) * len(LOWER_TYPES)),
        (_head, 4, len(SKIN) * len(HAIR) * len(HAIR_STYLES) * len(CLOTH)),
        (_accessory, 5, len(BAGS) * len(CLOTH) * len(SHOES)))]
    uses = [np.zeros(len(p)) for p in pools]
    chosen = np.zeros((n, len(pools)), np.int64)  # [n, 4] prototype index per part
    for j in range(n):
        for attempt in range(500):
            # prefer rarely used prototypes so every part is shared by several identities
            combo = [int(rng.choice(np.flatnonzero(u <= u.min() + (attempt // 100)))) for u in uses]
            if ((chosen[:j] != combo).sum(1) >= 2).all():
                break
        else:
            raise ValueError(f"identities={n}: could not find distinct part combinations; use fewer identities")
        chosen[j] = combo
        for u, i in zip(uses, combo):
            u[i] += 1
    people = []
    for combo in map(tuple, chosen.tolist()):
        up, lo, hd, ac = (pools[k][i] for k, i in enumerate(combo))
        people.append(dict(
            parts=combo, upper=up[0], upper2=up[1], pattern=up[2], long_sleeve=up[3], logo=up[4], logo_colour=up[5],
            lower=lo[0], lower_type=lo[1], skin=hd[0], hair=hd[1], hair_style=hd[2], hat=hd[3],
            bag=ac[0], bag_colour=ac[1], shoes=ac[2],
            build=float(rng.choice([0.9, 1.0, 1.12])), legs=float(rng.choice([-0.02, 0.0, 0.02])),
            jitter=rng.uniform(-10, 10, 3).astype(np.float32).tolist()))  # small personal colour shift
    return people


def make_cameras(n: int, rng: np.random.Generator) -> list:
    """Per-camera scene and imaging settings."""
    cams = []
    view_mixes = [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.2, 0.2, 0.6], [0.34, 0.33, 0.33]]
    for c in range(n):
        cams.append(dict(
            wall=rng.uniform(60, 200, 3).round().tolist(), floor=rng.uniform(50, 170, 3).round().tolist(),
            horizon=float(rng.uniform(0.55, 0.8)), texture=int(rng.integers(4)),
            gain=float(rng.uniform(0.7, 1.25)), cast=rng.uniform(0.82, 1.18, 3).round(3).tolist(),
            gamma=float(rng.uniform(0.8, 1.25)), side_light=float(rng.uniform(-0.25, 0.25)),
            blur=float(rng.choice([0.0, 0.4, 0.8, 1.2])), noise=float(rng.uniform(2, 8)),
            views=view_mixes[c % len(view_mixes)]))
    return cams


# ----------------------------------------------------------------------------------------------- the world
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


class Shot(NamedTuple):
    """One planned image: identity, camera (0-based), index within that identity and camera, split, frame."""

    pid: int
    cam: int
    idx: int
    split: str
    frame: int

    @property
    def file(self) -> str:
        """Market-1501 name ``pppp_cCs1_ffffff_00.jpg``; cameras past 9 take two digits (c10, c11, ...)."""
        return f"{self.pid:04d}_c{self.cam + 1}s1_{self.frame:06d}_00.jpg"


def _spread(total: int, n: int, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` integers in [lo, hi] summing to ``total``: uniform draws, then moved by one at random places."""
    v = rng.integers(lo, hi + 1, n)
    while (diff := int(total - v.sum())) != 0:
        step = 1 if diff > 0 else -1
        movable = np.flatnonzero(v < hi if step > 0 else v > lo)  # never empty: _validate_sizes checked the range
        v[rng.choice(movable, size=min(abs(diff), len(movable)), replace=False)] += step
    return v


def _drawn_sightings(cfg: WorldConfig, rng, train: np.ndarray) -> list:
    """[(pid, camera, images, query index or -1)] with every count drawn from its range."""
    c_lo, c_hi = _camera_range(cfg)
    lo, hi = cfg.images_per_camera
    out = []
    for pid, is_train in enumerate(train.tolist(), 1):
        for cam in sorted(rng.choice(cfg.cameras, size=int(rng.integers(c_lo, c_hi + 1)), replace=False).tolist()):
            n = int(rng.integers(lo, hi + 1))
            out.append((pid, cam, n, -1 if is_train else int(rng.integers(n))))  # one query per identity and camera
    return out


def _exact_sightings(cfg: WorldConfig, rng, train: np.ndarray) -> list:
    """As _drawn_sightings, with the counts spread to meet ``cfg.sizes`` exactly."""
    (c_lo, c_hi), (lo, hi) = _camera_range(cfg), cfg.images_per_camera
    _, train_images, query, gallery = cfg.sizes
    train_pairs = _train_pairs(cfg)[2]
    n_cams = np.zeros(len(train), np.int64)
    n_cams[train] = _spread(train_pairs, int(train.sum()), c_lo, c_hi, rng)
    n_cams[~train] = _spread(query, int((~train).sum()), c_lo, c_hi, rng)  # one query per test (identity, camera)
    pair_train = np.repeat(train, n_cams)
    n_images = np.zeros(len(pair_train), np.int64)
    n_images[pair_train] = _spread(train_images, train_pairs, lo, hi, rng)
    n_images[~pair_train] = _spread(query + gallery, query, lo, hi, rng)
    query_idx = np.where(pair_train, -1, rng.integers(0, n_images))
    cams = np.concatenate([np.sort(rng.choice(cfg.cameras, size=k, replace=False)) for k in n_cams.tolist()])
    pids = np.repeat(np.arange(1, len(train) + 1), n_cams)
    return list(zip(pids.tolist(), cams.tolist(), n_images.tolist(), query_idx.tolist()))


def plan_world(cfg: WorldConfig, seed: int):
    """Identities, cameras and the list of Shots (file names included), without rendering."""
    _validate(cfg)
    rng = np.random.default_rng([seed, 0])
    people = make_identities(cfg.identities, rng)
    cams = make_cameras(cfg.cameras, rng)
    pids = np.arange(1, cfg.identities + 1)
    train = np.isin(pids, rng.permutation(pids)[:_train_count(cfg)])  # [identities] bool
    sightings = (_exact_sightings if cfg.sizes else _drawn_sightings)(cfg, rng, train)
    shots = [(pid, cam, i, "train" if q < 0 else ("query" if i == q else "gallery"))
             for pid, cam, n, q in sightings for i in range(n)]
    # frame numbers increase per camera in plan order, so a camera's boxes of one identity sort by index
    cam_of = np.array([s[1] for s in shots])
    steps = rng.integers(1, 40, len(shots))
    frames = np.zeros(len(shots), np.int64)
    for c in range(cfg.cameras):
        frames[cam_of == c] = np.cumsum(steps[cam_of == c])
    return people, cams, [Shot(*s, f) for s, f in zip(shots, frames.tolist())]


def _prepare_out(out_dir: str, overwrite: bool, marker: str) -> None:
    if os.path.isfile(out_dir):
        raise ValueError(f"out={out_dir} is a file; give a folder to write the dataset into")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.exists(os.path.join(out_dir, marker)):  # never write into someone else's folder
            raise ValueError(f"out={out_dir} exists, is not empty and was not written by this tool; choose a new "
                             f"folder")
        if not overwrite:
            raise ValueError(f"out={out_dir} already holds a generated dataset; pass overwrite=True (--overwrite)")
    for folder in SPLIT_FOLDERS.values():
        path = os.path.join(out_dir, folder)
        os.makedirs(path, exist_ok=True)
        for f in os.listdir(path):
            if f.lower().endswith(".jpg"):
                os.remove(os.path.join(path, f))


class _RenderJob(NamedTuple):
    """What every render process needs, sent once per process."""

    people: list
    cams: list
    cfg: WorldConfig
    seed: int
    out_dir: str
    qualities: tuple  # JPEG quality per camera

    def render(self, shots: list) -> list:
        """Renders and writes ``shots``; returns their (file name, manifest entry) in order."""
        out = []
        for s in shots:
            img, info = render_image(self.people[s.pid - 1], self.cams[s.cam], self.cfg,
                                     np.random.default_rng([self.seed, s.pid, s.cam, s.idx]))
            Image.fromarray(img).save(os.path.join(self.out_dir, SPLIT_FOLDERS[s.split], s.file),
                                      quality=self.qualities[s.cam])
            out.append((s.file, dict(split=s.split, **info)))
        return out


_JOB = None  # the render process's _RenderJob, set once by _start_worker


def _start_worker(job: _RenderJob) -> None:
    global _JOB
    _JOB = job


def _render_in_worker(shots: list) -> list:
    return _JOB.render(shots)


def _render_all(job: _RenderJob, shots: list, workers: int | None, progress: bool) -> list:
    """(file name, manifest entry) of every shot, in plan order, whatever the number of ``workers``."""
    if workers is None:  # one process per CPU, but no pool start-up for a world of a few hundred images
        workers = max(1, min(os.cpu_count() or 1, len(shots) // 500))
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1 (or None: one render process per CPU)")
    size = max(1, min(256, -(-len(shots) // (4 * workers))))
    chunks = [shots[i:i + size] for i in range(0, len(shots), size)]
    out = []
    with tqdm(total=len(shots), desc="rendering synthetic world", unit="img", disable=not progress) as bar:
        def collect(results):
            for r in results:
                out.extend(r)
                bar.update(len(r))
        if workers == 1:
            collect(map(job.render, chunks))
        else:  # spawn, not fork: the caller may hold JAX's threads
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_worker, initargs=(job,)) as pool:
                collect(pool.map(_render_in_worker, chunks))
    return out


def generate(out_dir: str, identities: int | None = None, seed: int = 0, overwrite: bool = False,
             progress: bool = True, preset: str = "default", workers: int | None = None, **options) -> str:
    """Writes the synthetic world into ``out_dir`` (Market-1501 layout, JPEGs) and returns ``out_dir``.

    ``preset`` is a PRESETS name; ``identities`` and ``options`` (WorldConfig fields: cameras, height, width,
    misalign_rate, max_shift, occlusion_rate, ...) override it. ``workers`` render processes (None: one per CPU)
    write the same files for any count. Read it back with ``get_dataset("market_layout", out_dir)``.
    """
    cfg = world_config(preset, identities=identities, **options)
    people, cams, shots = plan_world(cfg, seed)
    out_dir = str(out_dir)
    _prepare_out(out_dir, overwrite, MANIFEST)
    q_lo, q_hi = cfg.jpeg_quality
    qualities = np.random.default_rng([seed, 1]).integers(q_lo, q_hi + 1, cfg.cameras)
    job = _RenderJob(people, cams, cfg, seed, out_dir, tuple(qualities.tolist()))
    manifest = dict(generator="data_pipelines.synthetic", seed=seed, config=cfg._asdict(),
                    cameras=cams, identities={f"{i + 1:04d}": {k: v for k, v in p.items() if k != "jitter"}
                                              for i, p in enumerate(people)},
                    images=dict(_render_all(job, shots, workers, progress)))
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, default=_jsonable)
    return out_dir


def ensure_world(out_dir: str, identities: int | None = None, seed: int = 0, progress: bool = True,
                 preset: str = "default", workers: int | None = None, **options) -> str:
    """``out_dir`` holding the world for these settings: reused when its manifest matches, else (re)generated."""
    cfg = world_config(preset, identities=identities, **options)
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            man = json.load(f)
        if man["seed"] == seed and man["config"] == json.loads(json.dumps(cfg._asdict())):
            return out_dir
    except (OSError, ValueError, KeyError):
        pass
    return generate(out_dir, identities=identities, seed=seed, overwrite=True, progress=progress, preset=preset,
                    workers=workers, **options)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x)} is not JSON serialisable")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_pipelines.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder to write (Market-1501 layout)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default",
                    help="world size: default (150 identities, 4 cameras, ~1,700 images) or msmt17 (MSMT17's "
                         "split sizes, 15 cameras, ~126k images); the options below override it")
    ap.add_argument("--identities", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cameras", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--misalign-rate", type=float)
    ap.add_argument("--max-shift", type=float)
    ap.add_argument("--occlusion-rate", type=float)
    ap.add_argument("--workers", type=int, help="render processes (default: one per CPU); the output is the same")
    ap.add_argument("--overwrite", action="store_true", help="replace a dataset this tool wrote before")
    a = ap.parse_args(argv)
    try:
        generate(a.out, identities=a.identities, seed=a.seed, overwrite=a.overwrite, preset=a.preset,
                 workers=a.workers, cameras=a.cameras, height=a.height, width=a.width,
                 misalign_rate=a.misalign_rate, max_shift=a.max_shift, occlusion_rate=a.occlusion_rate)
    except ValueError as e:
        ap.error(str(e))
    from data_pipelines.datasets import get_dataset
    print(get_dataset("market_layout", a.out).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
