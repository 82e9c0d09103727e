"""Writing a planned world: JPEGs in Market-1501 layout, rendered in a process pool, and a manifest.

Each image draws from its own generator seeded by (seed, pid, camera, index), so the files are the same for any
number of render processes. The manifest records the seed, the config, the cameras, the identities and every
image's split, view, misalignment and occlusion.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_pipelines.datasets.common import MARKET_FOLDERS
from data_pipelines.synthetic.plan import plan_world
from data_pipelines.synthetic.render import render_image
from data_pipelines.synthetic.world import WorldConfig, world_config

MANIFEST = "synthetic_manifest.json"


def _prepare_out(out_dir: str, overwrite: bool, marker: str) -> None:
    if os.path.isfile(out_dir):
        raise ValueError(f"out={out_dir} is a file; give a folder to write the dataset into")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.exists(os.path.join(out_dir, marker)):  # never write into someone else's folder
            raise ValueError(
                f"out={out_dir} exists, is not empty and was not written by this tool; choose a new folder"
            )
        if not overwrite:
            raise ValueError(f"out={out_dir} already holds a generated dataset; pass overwrite=True (--overwrite)")
    for folder in MARKET_FOLDERS.values():
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
            img, info = render_image(
                self.people[s.pid - 1],
                self.cams[s.cam],
                self.cfg,
                np.random.default_rng([self.seed, s.pid, s.cam, s.idx]),
            )
            Image.fromarray(img).save(
                os.path.join(self.out_dir, MARKET_FOLDERS[s.split], s.file), quality=self.qualities[s.cam]
            )
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
    chunks = [shots[i : i + size] for i in range(0, len(shots), size)]
    out = []
    with tqdm(total=len(shots), desc="rendering synthetic world", unit="img", disable=not progress) as bar:

        def collect(results):
            for r in results:
                out.extend(r)
                bar.update(len(r))

        if workers == 1:
            collect(map(job.render, chunks))
        else:  # spawn, not fork: the caller may hold JAX's threads
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(job,)
            ) as pool:
                collect(pool.map(_render_in_worker, chunks))
    return out


def generate(
    out_dir: str,
    identities: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    preset: str = "default",
    workers: int | None = None,
    **options,
) -> str:
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
    manifest = dict(
        generator="data_pipelines.synthetic",
        seed=seed,
        config=cfg._asdict(),
        cameras=cams,
        identities={f"{i + 1:04d}": {k: v for k, v in p.items() if k != "jitter"} for i, p in enumerate(people)},
        images=dict(_render_all(job, shots, workers, progress)),
    )
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, default=_jsonable)
    return out_dir


def ensure_world(
    out_dir: str,
    identities: int | None = None,
    seed: int = 0,
    progress: bool = True,
    preset: str = "default",
    workers: int | None = None,
    **options,
) -> str:
    """``out_dir`` holding the world for these settings: reused when its manifest matches, else (re)generated."""
    cfg = world_config(preset, identities=identities, **options)
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            man = json.load(f)
        if man["seed"] == seed and man["config"] == json.loads(json.dumps(cfg._asdict())):
            return out_dir
    except (OSError, ValueError, KeyError):
        pass
    return generate(
        out_dir,
        identities=identities,
        seed=seed,
        overwrite=True,
        progress=progress,
        preset=preset,
        workers=workers,
        **options,
    )


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x)} is not JSON serialisable")
