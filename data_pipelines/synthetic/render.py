"""One box of the synthetic world: a painted person in a camera's scene, through that camera's illumination,
colour cast, blur and noise.

The view changes what is visible (logo on the front only, backpack body on the back, profile from the side).
Per box: pose jitter (position, scale, gait) and, at the world's rates, an occluder and a detector error (box
shifted or cut vertically by up to ``max_shift`` of its height, then re-stretched).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

MARGIN = 0.35  # scene canvas extends this fraction of the box height above and below, for shifted boxes

CLOTH = np.array(
    [
        [30, 30, 35],
        [225, 225, 218],
        [128, 128, 130],
        [190, 35, 40],
        [40, 70, 170],
        [30, 40, 90],
        [40, 130, 60],
        [225, 200, 50],
        [225, 120, 40],
        [120, 60, 150],
        [228, 140, 170],
        [120, 80, 50],
        [200, 180, 140],
        [130, 180, 225],
    ],
    np.float32,
)
SKIN = np.array([[240, 200, 170], [210, 160, 120], [160, 110, 75], [100, 65, 45]], np.float32)
HAIR = np.array([[20, 18, 18], [60, 40, 25], [120, 80, 40], [215, 185, 110], [150, 150, 150]], np.float32)
SHOES = np.array([[25, 25, 25], [230, 230, 230], [110, 70, 40], [180, 40, 40], [50, 60, 140]], np.float32)
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "band")
LOGOS = ("none", "circle", "square", "diamond")
LOWER_TYPES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bald", "cap")
BAGS = ("none", "backpack", "shoulder")
VIEWS = ("front", "back", "side")


# ----------------------------------------------------------------------------------------------- painting
def _clip01(x: np.ndarray) -> np.ndarray:
    # np.clip's Python-level dispatch costs more than the arithmetic on these small windows
    return np.minimum(np.maximum(x, 0.0), 1.0)


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
        alpha = _clip01(0.5 - sdf_fn(uu, vv) * self.hp)[..., None]
        col = colour(uu, vv) if callable(colour) else np.asarray(colour, np.float32)
        if shade is not None:  # cylindrical shading across a limb or the torso
            cv, half = shade
            col = col * (1.0 - 0.28 * np.minimum(((vv - cv) / half) ** 2, 1.0))[..., None]
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
            t = _clip01(((uu - u0) * du + (vv - v0) * dv) / ll)
            return np.sqrt((uu - u0 - t * du) ** 2 + (vv - v0 - t * dv) ** 2) - r

        self.paint(
            sdf,
            (min(u0, u1) - r, max(u0, u1) + r, min(v0, v1) - r, max(v0, v1) + r),
            colour,
            shade=((v0 + v1) / 2, r + abs(dv) / 2) if shade else None,
        )

    def trapezoid(self, u0, u1, hw0, hw1, cv, colour, shade=True):
        def sdf(uu, vv):
            hw = hw0 + (hw1 - hw0) * _clip01((uu - u0) / (u1 - u0))
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
    sw = 0.115 * b * (0.62 if side else 1.0)  # shoulder half-width
    ww = 0.095 * b * (0.62 if side else 1.0)  # waist half-width
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
        p.capsule(
            sh,
            (sh[0] + sleeve_end * (hand[0] - sh[0]), sh[1] + sleeve_end * (hand[1] - sh[1])),
            arm_r * 1.12,
            upper_fill,
        )
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
        p.trapezoid(
            0.05, 0.062, 0.055, 0.055, -back * 0.4 if side else 0.0, col(CLOTH, person["hat"]) * 0.8, shade=False
        )  # the brim
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
    # in place throughout: the same arithmetic as the expressions, without temporaries of the whole canvas
    img = np.broadcast_to(np.where((rows >= cam["horizon"])[..., None], floor, wall), (h, w, 3)).copy()
    shift = rng.uniform(0, 1)  # the walker is at a different place in the scene each time
    t = cam["texture"]
    if t == 0:  # windows
        img[(((cols + shift) * 3) % 1 < 0.45) & ((rows * 4) % 1 < 0.5) & (rows < cam["horizon"] - 0.05)] *= 0.65
    elif t == 1:  # bricks / tiles
        img[((rows * 14) % 1 < 0.12) | (((cols + shift) * 5 + (np.floor(rows * 14) % 2) * 0.5) % 1 < 0.06)] *= 0.8
    elif t == 2:  # foliage: smooth blobs
        blob = np.sin(rows * 9 + shift * 6) * np.sin((cols + shift) * 11 + rows * 3)
        img *= 1 + 0.25 * blob[..., None] * (rows < cam["horizon"])[..., None]
    img *= (1 + 0.08 * (rows - cam["horizon"]))[..., None]  # a floor/ceiling gradient
    img *= rng.uniform(0.92, 1.08)
    img += rng.normal(0, 3, (1, 1, 3)).astype(np.float32)
    return img


def _occluder(canvas, rng, box_top, box_h) -> str:
    h, w, _ = canvas.shape
    colour = rng.uniform(30, 220, 3).astype(np.float32)
    kind = "bottom" if rng.random() < 0.6 else "side"
    if kind == "bottom":  # bench, car, bush: covers the lower 15-35 % of the box
        y0 = int(box_top + box_h * (1 - rng.uniform(0.15, 0.35)))
        region = canvas[y0 : int(box_top + box_h)]
    else:  # a pole or a passer-by at one side: 25-45 % of the width
        bw = int(w * rng.uniform(0.25, 0.45))
        x0 = 0 if rng.random() < 0.5 else w - bw
        region = canvas[:, x0 : x0 + bw]
    texture = rng.normal(0, 12, region.shape[:2] + (1,)).astype(np.float32)
    region[...] = colour + texture
    return kind


def _camera_look(img: np.ndarray, cam: dict, flicker: float) -> np.ndarray:
    """The camera's response to the scene ``img`` ([rows, width, 3] float32), as uint8."""
    x = np.clip(img, 0, 255)
    x /= 255.0
    w = x.shape[1]
    light = 1 + cam["side_light"] * (np.arange(w, dtype=np.float32) / w - 0.5)
    x **= cam["gamma"]
    x *= cam["gain"]
    x *= flicker
    x *= np.asarray(cam["cast"], np.float32)
    x *= light[None, :, None]
    x *= 255.0
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


def render_image(person: dict, cam: dict, cfg, rng: np.random.Generator):
    """One box of ``person`` seen by ``cam`` → (uint8 [height, width, 3], info dict); ``cfg`` is the world's
    WorldConfig (height, width, occlusion_rate, misalign_rate, max_shift)."""
    h, w = cfg.height, cfg.width
    box_top = MARGIN * h
    canvas_h = int(round(h * (1 + 2 * MARGIN)))
    canvas = _background(rng, cam, (canvas_h, w), box_top, h)
    view = VIEWS[int(rng.choice(3, p=cam["views"]))]
    facing = 1.0 if rng.random() < 0.5 else -1.0
    hp = h * rng.uniform(0.86, 0.95)  # person height in pixels (pose/scale jitter)
    person_top = box_top + rng.uniform(0.01 * h, 0.98 * h - hp)
    cx = w / 2 + rng.uniform(-0.06, 0.06) * w
    _draw_person(_Painter(canvas, person_top, cx, hp), person, view, facing, rng.uniform(-1, 1))
    info = {"view": view, "misalign": None, "occlusion": None}
    if rng.random() < cfg.occlusion_rate:
        info["occlusion"] = _occluder(canvas, rng, box_top, h)
    flicker = rng.uniform(0.9, 1.1)  # the camera look's; drawn before the box error, whose draws follow it
    y0, y1 = box_top, box_top + h
    if rng.random() < cfg.misalign_rate:  # detector error: shift or cut, up to max_shift of the height
        amount = rng.uniform(0.1 * cfg.max_shift / 0.3, cfg.max_shift) * h
        kind = ("shift_up", "shift_down", "cut_top", "cut_bottom")[int(rng.integers(4))]
        y0, y1 = {
            "shift_up": (y0 - amount, y1 - amount),
            "shift_down": (y0 + amount, y1 + amount),
            "cut_top": (y0 + amount, y1),
            "cut_bottom": (y0, y1 - amount),
        }[kind]
        info["misalign"] = {"kind": kind, "amount": round(amount / h, 3)}
    # only the rows the bilinear resize reads (the box and its 1.5-row filter support, rounded out) go through
    # the camera: the others stay 0 and are never read, so the crop equals that of the whole canvas
    r0, r1 = max(0, math.floor(y0) - 2), min(canvas_h, math.floor(y1) + 3)
    seen = np.zeros(canvas.shape, np.uint8)
    seen[r0:r1] = _camera_look(canvas[r0:r1], cam, flicker)
    crop = Image.fromarray(seen).resize((w, h), Image.BILINEAR, box=(0, y0, w, y1))
    if cam["blur"] > 0:
        crop = crop.filter(ImageFilter.GaussianBlur(cam["blur"]))
    out = np.asarray(crop, np.float32) + rng.normal(0, cam["noise"], (h, w, 3))
    return np.clip(out, 0, 255).astype(np.uint8), info
