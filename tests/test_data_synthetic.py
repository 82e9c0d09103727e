"""The synthetic re-ID world: layout, protocol, determinism (for any number of render processes), the msmt17
preset's exact sizes, two-digit cameras, part sharing, views, and that it is a re-ID problem in which hard stripe
alignment suffers from misaligned boxes and sliding alignment helps."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.datasets import get_dataset
from data_pipelines.datasets.common import SPLITS
from data_pipelines.images import load_images
from data_pipelines.synthetic import (
    MANIFEST,
    WorldConfig,
    ensure_world,
    generate,
    make_identities,
    plan_world,
    world_config,
)
from data_pipelines.synthetic.render import CLOTH, _draw_person, _Painter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 32  # small render size for the tests


@pytest.fixture(scope="module")
def default_world(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("world")), height=H, width=W, progress=False)


def test_default_world_layout_and_protocol(default_world):
    ds = get_dataset("market_layout", default_world)
    d = WorldConfig()
    st = ds.stats()
    assert st["train"]["identities"] == d.identities // 2 and st["query"]["identities"] == d.identities // 2
    assert all(st[s]["cameras"] == d.cameras for s in st)
    assert 1000 < sum(v["images"] for v in st.values()) < 3000  # "a few thousand" at most: CPU-sized
    gallery = {(r.pid, r.camid) for r in ds.gallery}
    for q in ds.query:  # every query has a cross-camera match in the gallery
        assert any(pid == q.pid and cam != q.camid for pid, cam in gallery)
    imgs, kept = load_images(ds.query[:5], H, W, progress=False)
    assert len(kept) == 5
    man = json.load(open(os.path.join(default_world, MANIFEST)))
    flags = list(man["images"].values())
    mis = np.mean([f["misalign"] is not None for f in flags])
    occ = np.mean([f["occlusion"] is not None for f in flags])
    assert abs(mis - d.misalign_rate) < 0.05 and abs(occ - d.occlusion_rate) < 0.04
    amounts = [f["misalign"]["amount"] for f in flags if f["misalign"]]
    assert max(amounts) <= d.max_shift + 1e-6
    assert {f["view"] for f in flags} == {"front", "back", "side"}


def test_deterministic_from_seed(tmp_path):
    read = lambda d: {
        f: open(os.path.join(d, s, f), "rb").read()
        for s in ("bounding_box_train", "query")
        for f in os.listdir(os.path.join(d, s))
    }
    a = read(generate(str(tmp_path / "a"), identities=6, seed=1, height=H, width=W, progress=False))
    b = read(generate(str(tmp_path / "b"), identities=6, seed=1, height=H, width=W, progress=False))
    c = read(generate(str(tmp_path / "c"), identities=6, seed=2, height=H, width=W, progress=False))
    assert a == b and a != c
    # ensure_world reuses a matching world and regenerates when the settings change
    before = os.path.getmtime(tmp_path / "a" / MANIFEST)
    ensure_world(str(tmp_path / "a"), identities=6, seed=1, height=H, width=W, progress=False)
    assert os.path.getmtime(tmp_path / "a" / MANIFEST) == before
    ensure_world(str(tmp_path / "a"), identities=6, seed=2, height=H, width=W, progress=False)
    assert read(str(tmp_path / "a")) == c


def test_parts_shared_combinations_distinct():
    people = make_identities(150, np.random.default_rng(0))
    parts = np.array([p["parts"] for p in people])  # [N, 4]: upper, lower, head, accessories prototypes
    for k in range(4):
        _, counts = np.unique(parts[:, k], return_counts=True)
        assert counts.min() >= 2  # no part prototype identifies a person by itself
    diff = (parts[:, None, :] != parts[None, :, :]).sum(-1)
    np.fill_diagonal(diff, 4)
    assert diff.min() >= 2  # any two people differ in at least two parts


def test_view_changes_visible_details():
    person = dict(make_identities(4, np.random.default_rng(0))[0])
    person.update(upper=1, upper2=2, pattern=0, logo=1, logo_colour=3, bag=1, bag_colour=4, jitter=[0, 0, 0])
    centre = {}
    for view in ("front", "back"):
        canvas = np.zeros((200, 80, 3), np.float32)
        _draw_person(_Painter(canvas, 10.0, 40.0, 180.0), person, view, 1.0, 0.0)
        centre[view] = canvas[10 + int(0.28 * 180), 40]
    np.testing.assert_allclose(centre["front"], CLOTH[3], atol=2)  # logo on the chest, front only
    np.testing.assert_allclose(centre["back"], CLOTH[4], atol=2)  # backpack covers the back


def _stripe_rank1(root, windows):
    """Rank-1 of a naive part matcher: 8 horizontal stripes of grey-world-normalised colour, each query stripe
    matched to the nearest gallery stripe within +-w positions (w = 0: hard stripe alignment)."""
    ds = get_dataset("market_layout", root)
    q, _ = load_images(ds.query, H, W, progress=False)
    g, _ = load_images(ds.gallery, H, W, progress=False)
    qp, gp = np.array([r.pid for r in ds.query]), np.array([r.pid for r in ds.gallery])
    same_cam = np.array([r.camid for r in ds.query])[:, None] == np.array([r.camid for r in ds.gallery])[None]

    def stripes(x):
        x = x.astype(np.float32)[:, :, W // 2 - 6 : W // 2 + 6]
        x = x / x.mean(axis=(1, 2), keepdims=True)
        return x.reshape(len(x), 8, -1, 12, 3).mean(axis=(2, 3))

    fq, fg = stripes(q), stripes(g)
    sd = np.sqrt(((fq[:, None, :, None] - fg[None, :, None, :]) ** 2).sum(-1))  # [Q, G, 8, 8]
    i, j = np.meshgrid(range(8), range(8), indexing="ij")
    out = {}
    for w in windows:
        masked = sd + np.where(np.abs(i - j) <= w, 0.0, np.inf)
        d = masked.min(-1).sum(-1) + masked.min(-2).sum(-1)
        d[(qp[:, None] == gp[None]) & same_cam] = np.inf  # same identity, same camera: not scored
        out[w] = float((gp[d.argmin(1)] == qp).mean())
    return out, 1.0 / len(set(qp))


def test_a_real_reid_problem_where_alignment_matters(tmp_path):
    aligned, chance = _stripe_rank1(
        generate(str(tmp_path / "a"), height=H, width=W, misalign_rate=0.0, occlusion_rate=0.0, progress=False), (0,)
    )
    shifted, _ = _stripe_rank1(
        generate(str(tmp_path / "m"), height=H, width=W, misalign_rate=0.8, occlusion_rate=0.0, progress=False), (0, 1)
    )
    assert 0.1 < aligned[0] < 0.6 and aligned[0] > 5 * chance  # learnable, far from solved by colour stripes
    assert shifted[0] < aligned[0] - 0.05  # misaligned boxes hurt hard alignment
    assert shifted[1] > shifted[0]  # sliding alignment recovers part of it


def test_bad_arguments_and_cli(tmp_path):
    with pytest.raises(ValueError, match="identities=2"):
        generate(str(tmp_path / "x"), identities=2)
    with pytest.raises(ValueError, match="max_shift"):
        generate(str(tmp_path / "x"), identities=6, max_shift=0.5)
    with pytest.raises(ValueError, match="unknown option"):
        generate(str(tmp_path / "x"), identities=6, colour="red")
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "data_pipelines.synthetic", *a], cwd=ROOT, capture_output=True, text=True
    )
    r = run("--out", str(tmp_path / "cli"), "--identities", "6", "--seed", "3", "--height", "32", "--width", "16")
    assert r.returncode == 0, r.stderr
    assert "query" in r.stdout and os.path.exists(tmp_path / "cli" / MANIFEST)
    r = run("--out", str(tmp_path / "cli"), "--identities", "6")
    assert r.returncode == 2 and "overwrite" in r.stderr
    r = run("--out", str(tmp_path / "bad"), "--identities", "1")
    assert r.returncode == 2 and "identities=1" in r.stderr
    r = run("--out", str(tmp_path / "bad"), "--preset", "market9")
    assert r.returncode == 2 and "market9" in r.stderr and "'default', 'msmt17'" in r.stderr
    with pytest.raises(ValueError, match=r"preset='market9' is not known; choose one of \['default', 'msmt17'\]"):
        generate(str(tmp_path / "x"), preset="market9")
    with pytest.raises(ValueError, match=r"sizes\[2\]=11659 query images.*3060.*6120\.\.9180"):
        plan_world(world_config("msmt17", max_cameras=3), 0)  # 3 cameras per identity hold too few queries


def test_msmt17_preset_plans_exact_sizes():
    """MSMT17's split sizes and 15 cameras, from the plan alone (nothing rendered)."""
    people, cams, shots = plan_world(world_config("msmt17"), seed=0)
    assert len(people) == 1041 + 3060 and len(cams) == 15
    got = {
        s: (
            len({x.pid for x in shots if x.split == s}),
            sum(x.split == s for x in shots),
            {x.cam for x in shots if x.split == s},
        )
        for s in SPLITS
    }
    assert {s: v[:2] for s, v in got.items()} == {
        "train": (1041, 32621),
        "query": (3060, 11659),
        "gallery": (3060, 82161),
    }
    assert all(v[2] == set(range(15)) for v in got.values())
    assert len({x.file for x in shots}) == len(shots)  # planned frame numbers keep every name unique
    gallery = {(x.pid, x.cam) for x in shots if x.split == "gallery"}
    query = [(x.pid, x.cam) for x in shots if x.split == "query"]
    assert len(set(query)) == len(query)  # one query per identity and camera ...
    assert set(query) <= gallery  # ... with gallery boxes from that camera and from another one
    assert all(any((pid, c) in gallery for c in range(15) if c != cam) for pid, cam in query)


def test_parallel_rendering_identical_and_two_digit_cameras(tmp_path):
    """1 or 2 render processes write byte-identical worlds; cameras 10-12 read back as camids 9-11."""

    def read(d):
        return {
            os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), "rb").read()
            for r, _, files in os.walk(d)
            for f in files
        }

    kw = dict(
        identities=8, seed=4, cameras=12, min_cameras=12, images_per_camera=(2, 2), height=H, width=W, progress=False
    )
    one = generate(str(tmp_path / "one"), workers=1, **kw)
    two = generate(str(tmp_path / "two"), workers=2, **kw)
    files = read(one)
    assert len(files) == 8 * 12 * 2 + 1 and files == read(two)  # the JPEGs and the manifest
    assert any("_c12s1_" in f for f in files)
    ds = get_dataset("market_layout", one)
    for split in ("train", "query", "gallery"):
        recs = ds.split(split)
        assert {r.camid for r in recs} == set(range(12))
        assert all(f"_c{r.camid + 1}s1_" in os.path.basename(r.path) for r in recs)
