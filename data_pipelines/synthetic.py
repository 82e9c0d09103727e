"""A synthetic re-ID world: procedurally drawn people seen by several cameras, written in Market-1501 layout.

Identity = a combination of part prototypes (upper-body outfit, lower-body outfit, head, accessories) drawn from
shared pools, so every part is worn by several identities and only the combination identifies a person
(identities differ in at least two parts). Cameras differ in background, illumination, colour cast, blur,
noise, JPEG quality and viewpoint mix; the view changes what is visible (logo on the front only, backpack body
on the back, profile from the side). Per image: pose jitter (position, scale, gait), and at controllable rates
detector errors (box shifted or cut vertically by up to ``max_shift`` of its height, then re-stretched) and
occluders. Deterministic from the seed: each image draws from its own generator seeded by (seed, pid, camera, index).

CLI: ``python -m data_pipelines.synthetic --out DIR [--identities N] [--seed S]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

MANIFEST = "synthetic_manifest.json"
MARGIN = 0.35  # scene canvas extends this fraction of the box height above and below, for shifted boxes

CLOTH = np.array([[30, 30, 35], [225, 225, 218], [128, 128, 130], [190, 35, 40], [40, 70, 170], [30, 40, 90],
                  [40, 130, 60], [225, 200, 50], [225, 120, 40], [120, 60, 150], [228, 140, 170], [120, 80, 50],
                  [200, 180, 140], [130, 180, 225]], np.float32)
SKIN = np.array([[240, 200, 170], [210, 160, 120], [160, 110, 75], [100, 65, 45]], np.float32)
HAIR = np.array([[20, 18, 18], [60, 40, 25], [120, 80, 40], [215, 185, 110], [150, 150, 150]], np.float32)
SHOES = np.array([[25, 25, 25], [230, 230, 230], [110, 70, 40], [180, 40, 40], [50, 60, 140]], np.float32)
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "band")
LOGOS = ("none", "circle", "square", "diamond")
LOWER_TYPES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bald", "cap")
BAGS = ("none", "backpack", "shoulder")
VIEWS = ("front", "back", "side")


class WorldConfig(NamedTuple):
    identities: int = 150
    cameras: int = 4
    min_cameras: int = 2          # cameras each identity is seen by, at least
    images_per_camera: tuple = (2, 6)  # per identity and camera (inclusive range)
    height: int = 128
    width: int = 64
    misalign_rate: float = 0.3    # fraction of boxes shifted or cut vertically
    max_shift: float = 0.3        # up to 30 % of the box height
    occlusion_rate: float = 0.15  # fraction of images with an occluder
    train_fraction: float = 0.5   # identities used for training; the rest form query + gallery
    jpeg_quality: tuple = (75, 95)


def _validate(cfg: WorldConfig) -> None:
    if cfg.identities < 4:
        raise ValueError(f"identities={cfg.identities} must be >= 4 (two for training, two for testing)")
    if not 2 <= cfg.cameras <= 9:
        raise ValueError(f"cameras={cfg.cameras} must lie in 2..9 (one digit in Market names)")
    if not 2 <= cfg.min_cameras <= cfg.cameras:
        raise ValueError(f"min_cameras={cfg.min_cameras} must lie in 2..cameras={cfg.cameras}")
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
    pools = [_pool(rng, max(3, n // 3), _upper), _pool(rng, max(3, n // 4), _lower),
             _pool(rng, max(3, n // 4), _head), _pool(rng, max(3, n // 5), _accessory)]
    uses = [np.zeros(len(p)) for p in pools]
    chosen = []
    for _ in range(n):
        for attempt in range(500):
            # prefer rarely used prototypes so every part is shared by several identities
            combo = tuple(int(rng.choice(np.flatnonzero(u <= u.min() + (attempt // 100)))) for u in uses)
            if all(sum(a != b for a, b in zip(combo, c)) >= 2 for c in chosen):
                break
        else:
            raise ValueError(f"identities={n}: could not find distinct part combinations; use fewer identities")
        chosen.append(combo)
        for u, i in zip(uses, combo):
            u[i] += 1
    people = []
    for combo in chosen:
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


# ----------------------------------------------------------------------------------------------- painting
class _Painter:
    """Soft-edged shapes in person coordinates (u down from the head top, v across; both in person heights)."""

    def __init__(self, canvas, top, cx, hp):
        self.img, self.top, self.cx, self.hp = canvas, top, cx, hp
        h, w, _ = canvas.shape
        self.u = (np.arange(h, dtype=np.float32) + 0.5 - top) / hp
        self.v = (np.arange(w, dtype=np.float32) + 0.5 - cx) / hp

    def _window(self, u0, u1, v0, v1):
        h, w = self.img.shape[:2]
        r0 = max(0, int(self.top + u0 * self.hp) - 1)
        r1 = min(h, int(math.ceil(self.top + u1 * self.hp)) + 2)
        c0 = max(0, int(self.cx + v0 * self.hp) - 1)
        c1 = min(w, int(math.ceil(self.cx + v1 * self.hp)) + 2)
        return r0, r1, c0, c1

    def paint(self, sdf_fn, bounds, colour, shade=None):
        """Composites ``colour`` (RGB or fn(U, V) -> [h, w, 3]) where the signed distance ``sdf_fn`` < 0."""
        r0, r1, c0, c1 = self._window(*bounds)
        if r0 >= r1 or c0 >= c1:
            return
        uu, vv = self.u[r0:r1, None], self.v[None, c0:c1]
        alpha = np.clip(0.5 - sdf_fn(uu, vv) * self.hp, 0.0, 1.0)[..., None]
        col = colour(uu, vv) if callable(colour) else np.asarray(colour, np.float32)
        if shade is not None:  # cylindrical shading across a limb or the torso
            cv, half = shade
            col = col * (1.0 - 0.28 * np.clip(((vv - cv) / half) ** 2, 0, 1))[..., None]
        region = self.img[r0:r1, c0:c1]
        region += alpha * (col - region)

    def ellipse(self, cu, cv, ru, rv, colour, clip_u=None):
        def sdf(uu, vv):
            d = (np.sqrt(((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2) - 1.0) * min(ru, rv)
            return d if clip_u is None else np.maximum(d, uu - clip_u)
        self.paint(sdf, (cu - ru, cu + ru, cv - rv, cv + rv), colour)

    def capsule(self, p0, p1, r, colour, shade=True):
        (u0, v0), (u1, v1) = p0, p1
        du, dv = u1 - u0, v1 - v0
        ll = du * du + dv * dv + 1e-9

        def sdf(uu, vv):
            t = np.clip(((uu - u0) * du + (vv - v0) * dv) / ll, 0.0, 1.0)
            return np.sqrt((uu - u0 - t * du) ** 2 + (vv - v0 - t * dv) ** 2) - r
        self.paint(sdf, (min(u0, u1) - r, max(u0, u1) + r, min(v0, v1) - r, max(v0, v1) + r), colour,
                   shade=((v0 + v1) / 2, r + abs(dv) / 2) if shade else None)

    def trapezoid(self, u0, u1, hw0, hw1, cv, colour, shade=True):
        def sdf(uu, vv):
            hw = hw0 + (hw1 - hw0) * np.clip((uu - u0) / (u1 - u0), 0, 1)
            return np.maximum(np.abs(vv - cv) - hw, np.maximum(u0 - uu, uu - u1))
        hw = max(hw0, hw1)
        self.paint(sdf, (u0, u1, cv - hw, cv + hw), colour, shade=(cv, hw) if shade else None)


def _pattern(kind: int, c1, c2):
    name = PATTERNS[kind]
    if name == "plain":
        return c1
    def fn(uu, vv):
        if name == "hstripes":
            on = (uu / 0.05) % 1.0 < 0.5
        elif name == "vstripes":
            on = (vv / 0.045) % 1.0 < 0.5
        elif name == "checks":
            on = ((uu / 0.06) % 1.0 < 0.5) ^ ((vv / 0.06) % 1.0 < 0.5)
        else:  # "band": a wide chest band
            on = (uu > 0.26) & (uu < 0.34)
        on = np.broadcast_to(on, np.broadcast_shapes(uu.shape, vv.shape))
        return np.where(on[..., None], c2, c1).astype(np.float32)
    return fn


def _draw_person(p: _Painter, person: dict, view: str, facing: float, phase: float) -> None:
    col = lambda palette, i: palette[i] + np.asarray(person["jitter"], np.float32)
    skin, hair = col(SKIN, person["skin"]), col(HAIR, person["hair"])
    upper, lower = col(CLOTH, person["upper"]), col(CLOTH, person["lower"])
    upper_fill = _pattern(person["pattern"], upper, col(CLOTH, person["upper2"]))
    shoes, bag = col(SHOES, person["shoes"]), col(CLOTH, person["bag_colour"])
    b, side = person["build"], view == "side"
    sw = 0.115 * b * (0.62 if side else 1.0)       # shoulder half-width
    ww = 0.095 * b * (0.62 if side else 1.0)       # waist half-width
    waist = 0.5 + person["legs"]
    stride = (0.09 if side else 0.025) * phase
    style, bag_type = HAIR_STYLES[person["hair_style"]], BAGS[person["bag"]]
    back = -facing * 0.06  # side view: which way the back of the body points

    if style == "long" and view == "front":  # seen behind the shoulders
        p.trapezoid(0.05, 0.24, 0.055, 0.07, 0.0, hair, shade=False)
    if bag_type == "backpack" and side:
        p.trapezoid(0.18, 0.44, 0.05, 0.055, back * 1.6, bag)
    # legs (trousers or skin), shoes
    leg_r = 0.036 * b
    lower_name = LOWER_TYPES[person["lower_type"]]
    for s in (-1, 1):
        hip = (waist, s * 0.045 * b * (0.4 if side else 1.0))
        ankle = (0.94, s * (0.05 * b if not side else 0.0) + s * stride)
        p.capsule(hip, ankle, leg_r, skin if lower_name != "trousers" else lower)
        if lower_name == "shorts":
            t = 0.4
            p.capsule(hip, (hip[0] + t * (ankle[0] - hip[0]), hip[1] + t * (ankle[1] - hip[1])), leg_r * 1.15, lower)
        p.ellipse(0.955, ankle[1] + (facing * 0.02 if side else 0.0), 0.022, 0.04, shoes)
    if lower_name == "skirt":
        p.trapezoid(waist - 0.02, waist + 0.22, ww + 0.005, ww + 0.06, 0.0, lower)
    # arms (behind the torso in the side view)
    arm_r = 0.027 * b
    sleeve_end = 0.92 if person["long_sleeve"] else 0.35
    arms = (1,) if side else (-1, 1)
    for s in arms:
        sh = (0.18, s * (sw - 0.01) if not side else -facing * 0.01)
        hand = (0.49, (s * (sw + 0.012) if not side else 0.0) - s * stride * 0.8)
        p.capsule(sh, hand, arm_r, skin)
        p.capsule(sh, (sh[0] + sleeve_end * (hand[0] - sh[0]), sh[1] + sleeve_end * (hand[1] - sh[1])),
                  arm_r * 1.12, upper_fill)
    # torso, neck, head
    p.trapezoid(0.15, waist + 0.01, sw, ww, 0.0, upper_fill)
    if lower_name != "skirt":
        p.trapezoid(waist - 0.01, waist + 0.04, ww, ww + 0.005, 0.0, lower)
    p.trapezoid(0.12, 0.16, 0.022, 0.026, 0.0, skin, shade=False)
    p.ellipse(0.075, 0.0, 0.066, 0.05, hair if view == "back" else skin)
    if view == "side":
        p.ellipse(0.07, back * 0.5, 0.06, 0.04, hair)
    if style == "cap":
        p.ellipse(0.045, 0.0, 0.042, 0.054, col(CLOTH, person["hat"]), clip_u=0.06)
        p.trapezoid(0.05, 0.062, 0.055, 0.055, -back * 0.4 if side else 0.0, col(CLOTH, person["hat"]) * 0.8,
                    shade=False)  # the brim
    elif style != "bald":
        p.ellipse(0.06, 0.0, 0.052, 0.053, hair, clip_u=0.045 if view == "front" else 0.1)
    if style == "long" and view != "front":
        p.trapezoid(0.06, 0.25, 0.05, 0.062, back * 0.5 if side else 0.0, hair, shade=False)
    # view-dependent details
    if view == "front" and LOGOS[person["logo"]] != "none":
        lc, kind = col(CLOTH, person["logo_colour"]), LOGOS[person["logo"]]
        if kind == "circle":
            p.ellipse(0.28, 0.0, 0.03, 0.03, lc)
        elif kind == "square":
            p.trapezoid(0.25, 0.31, 0.03, 0.03, 0.0, lc, shade=False)
        else:
            p.trapezoid(0.245, 0.315, 0.0, 0.045, 0.0, lc, shade=False)  # a wedge ("diamond")
    if bag_type == "backpack":
        if view == "back":
            p.trapezoid(0.18, 0.44, 0.08 * b, 0.085 * b, 0.0, bag)
        elif view == "front":
            for s in (-1, 1):
                p.capsule((0.16, s * 0.07 * b), (0.36, s * 0.075 * b), 0.009, bag * 0.6, shade=False)
    elif bag_type == "shoulder":
        p.capsule((0.16, -sw * 0.8), (0.45, sw * 1.1), 0.008, bag * 0.7, shade=False)
        p.trapezoid(0.42, 0.53, 0.045, 0.05, (sw + 0.03) * (facing if side else 1.0), bag)


def _background(rng, cam: dict, shape, box_top: float, box_h: float) -> np.ndarray:
    h, w = shape
    rows = (np.arange(h, dtype=np.float32)[:, None] - box_top) / box_h
    cols = np.arange(w, dtype=np.float32)[None, :] / w
    wall, floor = np.asarray(cam["wall"], np.float32), np.asarray(cam["floor"], np.float32)
    img = np.where((rows >= cam["horizon"])[..., None], floor, wall) * np.ones((h, w, 1), np.float32)
    shift = rng.uniform(0, 1)  # the walker is at a different place in the scene each time
    t = cam["texture"]
    if t == 0:    # windows
        on = (((cols + shift) * 3) % 1 < 0.45) & ((rows * 4) % 1 < 0.5) & (rows < cam["horizon"] - 0.05)
        img = np.where(on[..., None], img * 0.65, img)
    elif t == 1:  # bricks / tiles
        on = ((rows * 14) % 1 < 0.12) | (((cols + shift) * 5 + (np.floor(rows * 14) % 2) * 0.5) % 1 < 0.06)
        img = np.where(on[..., None], img * 0.8, img)
    elif t == 2:  # foliage: smooth blobs
        blob = np.sin(rows * 9 + shift * 6) * np.sin((cols + shift) * 11 + rows * 3)
        img = img * (1 + 0.25 * blob[..., None] * (rows < cam["horizon"])[..., None])
    img = img * (1 + 0.08 * (rows - cam["horizon"]))[..., None]  # a floor/ceiling gradient
    return img * rng.uniform(0.92, 1.08) + rng.normal(0, 3, (1, 1, 3)).astype(np.float32)


def _occluder(canvas, rng, box_top, box_h) -> str:
    h, w, _ = canvas.shape
    colour = rng.uniform(30, 220, 3).astype(np.float32)
    kind = "bottom" if rng.random() < 0.6 else "side"
    if kind == "bottom":  # bench, car, bush: covers the lower 15-35 % of the box
        y0 = int(box_top + box_h * (1 - rng.uniform(0.15, 0.35)))
        region = canvas[y0:int(box_top + box_h)]
    else:  # a pole or a passer-by at one side: 25-45 % of the width
        bw = int(w * rng.uniform(0.25, 0.45))
        x0 = 0 if rng.random() < 0.5 else w - bw
        region = canvas[:, x0:x0 + bw]
    texture = rng.normal(0, 12, region.shape[:2] + (1,)).astype(np.float32)
    region[...] = colour + texture
    return kind


def _camera_look(img: np.ndarray, cam: dict, rng) -> np.ndarray:
    x = np.clip(img, 0, 255) / 255.0
    w = x.shape[1]
    light = 1 + cam["side_light"] * (np.arange(w, dtype=np.float32) / w - 0.5)
    x = (x ** cam["gamma"]) * cam["gain"] * rng.uniform(0.9, 1.1) * np.asarray(cam["cast"], np.float32)
    return np.clip(x * light[None, :, None] * 255.0, 0, 255)


def render_image(person: dict, cam: dict, cfg: WorldConfig, rng: np.random.Generator):
    """One box of ``person`` seen by ``cam`` → (uint8 [height, width, 3], info dict)."""
    h, w = cfg.height, cfg.width
    box_top = MARGIN * h
    canvas_h = int(round(h * (1 + 2 * MARGIN)))
    canvas = _background(rng, cam, (canvas_h, w), box_top, h)
    view = VIEWS[int(rng.choice(3, p=cam["views"]))]
    facing = 1.0 if rng.random() < 0.5 else -1.0
    hp = h * rng.uniform(0.86, 0.95)                     # person height in pixels (pose/scale jitter)
    person_top = box_top + rng.uniform(0.01 * h, 0.98 * h - hp)
    cx = w / 2 + rng.uniform(-0.06, 0.06) * w
    _draw_person(_Painter(canvas, person_top, cx, hp), person, view, facing, rng.uniform(-1, 1))
    info = {"view": view, "misalign": None, "occlusion": None}
    if rng.random() < cfg.occlusion_rate:
        info["occlusion"] = _occluder(canvas, rng, box_top, h)
    canvas = _camera_look(canvas, cam, rng)
    y0, y1 = box_top, box_top + h
    if rng.random() < cfg.misalign_rate:  # detector error: shift or cut, up to max_shift of the height
        amount = rng.uniform(0.1 * cfg.max_shift / 0.3, cfg.max_shift) * h
        kind = ("shift_up", "shift_down", "cut_top", "cut_bottom")[int(rng.integers(4))]
        y0, y1 = {"shift_up": (y0 - amount, y1 - amount), "shift_down": (y0 + amount, y1 + amount),
                  "cut_top": (y0 + amount, y1), "cut_bottom": (y0, y1 - amount)}[kind]
        info["misalign"] = {"kind": kind, "amount": round(amount / h, 3)}
    crop = Image.fromarray(canvas.astype(np.uint8)).resize((w, h), Image.BILINEAR, box=(0, y0, w, y1))
    if cam["blur"] > 0:
        crop = crop.filter(ImageFilter.GaussianBlur(cam["blur"]))
    out = np.asarray(crop, np.float32) + rng.normal(0, cam["noise"], (h, w, 3))
    return np.clip(out, 0, 255).astype(np.uint8), info


# ----------------------------------------------------------------------------------------------- the world
def plan_world(cfg: WorldConfig, seed: int):
    """Identities, cameras and the list of (pid, camera, index, split) images, without rendering."""
    _validate(cfg)
    rng = np.random.default_rng([seed, 0])
    people = make_identities(cfg.identities, rng)
    cams = make_cameras(cfg.cameras, rng)
    pids = np.arange(1, cfg.identities + 1)
    n_train = max(2, min(cfg.identities - 2, int(round(cfg.train_fraction * cfg.identities))))
    train_ids = set(rng.permutation(pids)[:n_train].tolist())
    shots = []
    lo, hi = cfg.images_per_camera
    for pid in pids.tolist():
        seen = sorted(rng.choice(cfg.cameras, size=int(rng.integers(cfg.min_cameras, cfg.cameras + 1)),
                                 replace=False).tolist())
        for cam in seen:
            n = int(rng.integers(lo, hi + 1))
            query_idx = -1 if pid in train_ids else int(rng.integers(n))  # one query per identity and camera
            for i in range(n):
                split = "train" if pid in train_ids else ("query" if i == query_idx else "gallery")
                shots.append((pid, cam, i, split))
    return people, cams, shots


SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


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


def generate(out_dir: str, identities: int = 150, seed: int = 0, overwrite: bool = False, progress: bool = True,
             **options) -> str:
    """Writes the synthetic world into ``out_dir`` (Market-1501 layout, JPEGs) and returns ``out_dir``.

    ``options`` are WorldConfig fields (cameras, height, width, misalign_rate, max_shift, occlusion_rate, ...).
    Read it back with ``get_dataset("market_layout", out_dir)``.
    """
    unknown = sorted(set(options) - set(WorldConfig._fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; choose from {WorldConfig._fields}")
    cfg = WorldConfig(identities=int(identities), **options)
    people, cams, shots = plan_world(cfg, seed)
    out_dir = str(out_dir)
    _prepare_out(out_dir, overwrite, MANIFEST)
    frames = [0] * cfg.cameras
    images = {}
    q_lo, q_hi = cfg.jpeg_quality
    qualities = np.random.default_rng([seed, 1]).integers(q_lo, q_hi + 1, cfg.cameras)
    for pid, cam, idx, split in tqdm(shots, desc="rendering synthetic world", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, pid, cam, idx])
        img, info = render_image(people[pid - 1], cams[cam], cfg, rng)
        frames[cam] += int(rng.integers(1, 40))
        name = f"{pid:04d}_c{cam + 1}s1_{frames[cam]:06d}_00.jpg"
        Image.fromarray(img).save(os.path.join(out_dir, SPLIT_FOLDERS[split], name), quality=int(qualities[cam]))
        images[name] = dict(split=split, **info)
    manifest = dict(generator="data_pipelines.synthetic", seed=seed, config=cfg._asdict(),
                    cameras=cams, identities={f"{i + 1:04d}": {k: v for k, v in p.items() if k != "jitter"}
                                              for i, p in enumerate(people)},
                    images=images)
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, default=_jsonable)
    return out_dir


def ensure_world(out_dir: str, identities: int = 150, seed: int = 0, progress: bool = True, **options) -> str:
    """``out_dir`` holding the world for these settings: reused when its manifest matches, else (re)generated."""
    cfg = WorldConfig(identities=int(identities), **options)
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            man = json.load(f)
        if man["seed"] == seed and man["config"] == json.loads(json.dumps(cfg._asdict())):
            return out_dir
    except (OSError, ValueError, KeyError):
        pass
    return generate(out_dir, identities=identities, seed=seed, overwrite=True, progress=progress, **options)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x)} is not JSON serialisable")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_pipelines.synthetic", description=__doc__.split("\n")[0])
    d = WorldConfig()
    ap.add_argument("--out", required=True, help="folder to write (Market-1501 layout)")
    ap.add_argument("--identities", type=int, default=d.identities)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cameras", type=int, default=d.cameras)
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--misalign-rate", type=float, default=d.misalign_rate)
    ap.add_argument("--max-shift", type=float, default=d.max_shift)
    ap.add_argument("--occlusion-rate", type=float, default=d.occlusion_rate)
    ap.add_argument("--overwrite", action="store_true", help="replace a dataset this tool wrote before")
    a = ap.parse_args(argv)
    try:
        generate(a.out, identities=a.identities, seed=a.seed, overwrite=a.overwrite, cameras=a.cameras,
                 height=a.height, width=a.width, misalign_rate=a.misalign_rate, max_shift=a.max_shift,
                 occlusion_rate=a.occlusion_rate)
    except ValueError as e:
        ap.error(str(e))
    from data_pipelines.datasets import get_dataset
    print(get_dataset("market_layout", a.out).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
