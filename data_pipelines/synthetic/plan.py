"""The world's plan: who is seen by which camera, how often, in which split and under which file name.

All of it (frame numbers included) is drawn up front from the seed, so rendering can run in any number of
processes. A test identity has one query per camera that sees it; its other boxes there form the gallery.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from data_pipelines.synthetic.people import make_cameras, make_identities
from data_pipelines.synthetic.world import WorldConfig, camera_range, train_count, train_pairs, validate


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
        movable = np.flatnonzero(v < hi if step > 0 else v > lo)  # never empty: validate checked the range
        v[rng.choice(movable, size=min(abs(diff), len(movable)), replace=False)] += step
    return v


def _drawn_sightings(cfg: WorldConfig, rng, train: np.ndarray) -> list:
    """[(pid, camera, images, query index or -1)] with every count drawn from its range."""
    c_lo, c_hi = camera_range(cfg)
    lo, hi = cfg.images_per_camera
    out = []
    for pid, is_train in enumerate(train.tolist(), 1):
        for cam in sorted(rng.choice(cfg.cameras, size=int(rng.integers(c_lo, c_hi + 1)), replace=False).tolist()):
            n = int(rng.integers(lo, hi + 1))
            out.append((pid, cam, n, -1 if is_train else int(rng.integers(n))))  # one query per identity and camera
    return out


def _exact_sightings(cfg: WorldConfig, rng, train: np.ndarray) -> list:
    """As _drawn_sightings, with the counts spread to meet ``cfg.sizes`` exactly."""
    (c_lo, c_hi), (lo, hi) = camera_range(cfg), cfg.images_per_camera
    _, train_images, query, gallery = cfg.sizes
    n_pairs = train_pairs(cfg)[2]
    n_cams = np.zeros(len(train), np.int64)
    n_cams[train] = _spread(n_pairs, int(train.sum()), c_lo, c_hi, rng)
    n_cams[~train] = _spread(query, int((~train).sum()), c_lo, c_hi, rng)  # one query per test (identity, camera)
    pair_train = np.repeat(train, n_cams)
    n_images = np.zeros(len(pair_train), np.int64)
    n_images[pair_train] = _spread(train_images, n_pairs, lo, hi, rng)
    n_images[~pair_train] = _spread(query + gallery, query, lo, hi, rng)
    query_idx = np.where(pair_train, -1, rng.integers(0, n_images))
    cams = np.concatenate([np.sort(rng.choice(cfg.cameras, size=k, replace=False)) for k in n_cams.tolist()])
    pids = np.repeat(np.arange(1, len(train) + 1), n_cams)
    return list(zip(pids.tolist(), cams.tolist(), n_images.tolist(), query_idx.tolist()))


def plan_world(cfg: WorldConfig, seed: int):
    """Identities, cameras and the list of Shots (file names included), without rendering."""
    validate(cfg)
    rng = np.random.default_rng([seed, 0])
    people = make_identities(cfg.identities, rng)
    cams = make_cameras(cfg.cameras, rng)
    pids = np.arange(1, cfg.identities + 1)
    train = np.isin(pids, rng.permutation(pids)[: train_count(cfg)])  # [identities] bool
    sightings = (_exact_sightings if cfg.sizes else _drawn_sightings)(cfg, rng, train)
    shots = [
        (pid, cam, i, "train" if q < 0 else ("query" if i == q else "gallery"))
        for pid, cam, n, q in sightings
        for i in range(n)
    ]
    # frame numbers increase per camera in plan order, so a camera's boxes of one identity sort by index
    cam_of = np.array([s[1] for s in shots])
    steps = rng.integers(1, 40, len(shots))
    frames = np.zeros(len(shots), np.int64)
    for c in range(cfg.cameras):
        frames[cam_of == c] = np.cumsum(steps[cam_of == c])
    return people, cams, [Shot(*s, f) for s, f in zip(shots, frames.tolist())]
