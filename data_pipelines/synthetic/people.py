"""The world's people and cameras.

An identity is a combination of part prototypes (upper-body outfit, lower-body outfit, head, accessories) drawn
from shared pools, so every part is worn by several identities and only the combination identifies a person.
Cameras differ in background, illumination, colour cast, blur, noise and viewpoint mix.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.synthetic.render import BAGS, CLOTH, HAIR, HAIR_STYLES, LOGOS, LOWER_TYPES, PATTERNS, SHOES, SKIN


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
    return (
        c,
        c2,
        int(rng.integers(len(PATTERNS))),
        int(rng.integers(2)),
        int(rng.integers(len(LOGOS))),
        int(rng.integers(len(CLOTH))),
    )


def _lower(rng):
    return (int(rng.integers(len(CLOTH))), int(rng.choice(len(LOWER_TYPES), p=[0.6, 0.25, 0.15])))


def _head(rng):
    return (
        int(rng.integers(len(SKIN))),
        int(rng.integers(len(HAIR))),
        int(rng.integers(len(HAIR_STYLES))),
        int(rng.integers(len(CLOTH))),
    )


def _accessory(rng):
    return (
        int(rng.choice(len(BAGS), p=[0.4, 0.35, 0.25])),
        int(rng.integers(len(CLOTH))),
        int(rng.integers(len(SHOES))),
    )


def make_identities(n: int, rng: np.random.Generator) -> list:
    """``n`` identities as dicts of part prototypes: each part shared by ~3-5 identities, combinations
    pairwise different in at least two of the four parts."""
    # a pool never asks for more prototypes than its sampler can draw (large worlds: lower body, accessories)
    pools = [
        _pool(rng, min(max(3, n // d), space), sampler)
        for sampler, d, space in (
            (_upper, 3, len(CLOTH) * (len(CLOTH) - 1) * len(PATTERNS) * 2 * len(LOGOS) * len(CLOTH)),
            (_lower, 4, len(CLOTH) * len(LOWER_TYPES)),
            (_head, 4, len(SKIN) * len(HAIR) * len(HAIR_STYLES) * len(CLOTH)),
            (_accessory, 5, len(BAGS) * len(CLOTH) * len(SHOES)),
        )
    ]
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
        people.append(
            dict(
                parts=combo,
                upper=up[0],
                upper2=up[1],
                pattern=up[2],
                long_sleeve=up[3],
                logo=up[4],
                logo_colour=up[5],
                lower=lo[0],
                lower_type=lo[1],
                skin=hd[0],
                hair=hd[1],
                hair_style=hd[2],
                hat=hd[3],
                bag=ac[0],
                bag_colour=ac[1],
                shoes=ac[2],
                build=float(rng.choice([0.9, 1.0, 1.12])),
                legs=float(rng.choice([-0.02, 0.0, 0.02])),
                jitter=rng.uniform(-10, 10, 3).astype(np.float32).tolist(),
            )
        )  # small personal colour shift
    return people


def make_cameras(n: int, rng: np.random.Generator) -> list:
    """Per-camera scene and imaging settings."""
    cams = []
    view_mixes = [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.2, 0.2, 0.6], [0.34, 0.33, 0.33]]
    for c in range(n):
        cams.append(
            dict(
                wall=rng.uniform(60, 200, 3).round().tolist(),
                floor=rng.uniform(50, 170, 3).round().tolist(),
                horizon=float(rng.uniform(0.55, 0.8)),
                texture=int(rng.integers(4)),
                gain=float(rng.uniform(0.7, 1.25)),
                cast=rng.uniform(0.82, 1.18, 3).round(3).tolist(),
                gamma=float(rng.uniform(0.8, 1.25)),
                side_light=float(rng.uniform(-0.25, 0.25)),
                blur=float(rng.choice([0.0, 0.4, 0.8, 1.2])),
                noise=float(rng.uniform(2, 8)),
                views=view_mixes[c % len(view_mixes)],
            )
        )
    return cams
