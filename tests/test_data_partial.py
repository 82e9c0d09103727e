"""Partial-Market/Duke generator: exact fractions, band/crop geometry, reproducibility, manifest, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_pipelines.datasets import get_dataset
from data_pipelines.partial import MANIFEST, crop_vertical, make_partial, occlude

from helpers.data import market_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _src(tmp_path, n=20):
    names = [f"{1 + i // 4:04d}_c{1 + i % 2}s1_{i:06d}_00.png" for i in range(n)]  # PNG: lossless checks
    return market_tree(
        str(tmp_path / "src"), {"bounding_box_train": names, "query": names[4:6], "bounding_box_test": names[6:]}
    )


def test_occlude_band_geometry():
    img = np.full((100, 20, 3), 50, np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(50):
        out, info = occlude(img, rng, (0.1, 0.3), fill="black")
        changed = np.flatnonzero((out != img).any(axis=(1, 2)))
        assert 10 <= info["rows"] <= 30 and changed[0] == info["top"] and len(changed) == info["rows"]
        assert (out[info["top"] : info["top"] + info["rows"]] == 0).all()


def test_crop_is_restretched_window():
    ramp = np.repeat(np.arange(100, dtype=np.uint8)[:, None, None] * 2, 8, 1).repeat(3, 2)
    out, info = crop_vertical(ramp, np.random.default_rng(1), (0.2, 0.3))
    assert out.shape == ramp.shape and 70 <= info["rows"] <= 80
    # the first/last rows now show the window's edges (a vertical stretch of that window)
    assert abs(int(out[0, 0, 0]) - 2 * info["top"]) <= 2
    assert abs(int(out[-1, 0, 0]) - 2 * (info["top"] + info["rows"] - 1)) <= 2


def test_fractions_reproducibility_and_manifest(tmp_path):
    src = _src(tmp_path)
    options = dict(splits=("train", "gallery"), occlude_fraction=0.25, crop_fraction=0.35, progress=False)
    a = make_partial(src, str(tmp_path / "a"), seed=4, **options)
    man = json.load(open(os.path.join(a, MANIFEST)))
    assert man["seed"] == 4 and man["splits"] == ["train", "gallery"]
    ops = {}
    for key, v in man["images"].items():
        ops.setdefault(key.split("/")[0], []).append(v["op"])
    assert ops["bounding_box_train"].count("occlude") == 5 and ops["bounding_box_train"].count("crop") == 7
    assert ops["bounding_box_test"].count("occlude") == 4 and ops["bounding_box_test"].count("crop") == 5
    assert "query" not in ops  # untouched split: byte copies
    for f in os.listdir(os.path.join(src, "query")):
        assert open(os.path.join(src, "query", f), "rb").read() == open(os.path.join(a, "query", f), "rb").read()
    # modified files differ from the source, unmodified ones are identical; sizes are kept
    for folder in ("bounding_box_train", "bounding_box_test"):
        for f in os.listdir(os.path.join(src, folder)):
            s = np.asarray(Image.open(os.path.join(src, folder, f)))
            d = np.asarray(Image.open(os.path.join(a, folder, f)))
            assert s.shape == d.shape
            assert (f"{folder}/{f}" in man["images"]) == (not np.array_equal(s, d))
    b = make_partial(src, str(tmp_path / "b"), seed=4, **options)
    c = make_partial(src, str(tmp_path / "c"), seed=5, **options)
    for folder in ("bounding_box_train", "bounding_box_test"):
        for f in os.listdir(os.path.join(a, folder)):
            assert open(os.path.join(a, folder, f), "rb").read() == open(os.path.join(b, folder, f), "rb").read()
    assert json.load(open(os.path.join(c, MANIFEST)))["images"] != man["images"]
    assert len(get_dataset("market_layout", a).train) == 20  # still a Market-layout dataset


def test_bad_arguments(tmp_path):
    src = _src(tmp_path, 8)
    with pytest.raises(ValueError, match="> 1"):
        make_partial(src, str(tmp_path / "o"), occlude_fraction=0.6, crop_fraction=0.6)
    with pytest.raises(ValueError, match="missing"):
        make_partial(str(tmp_path), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="splits"):
        make_partial(src, str(tmp_path / "o"), splits=("test",))
    make_partial(src, str(tmp_path / "o"), progress=False)
    with pytest.raises(ValueError, match="not empty"):
        make_partial(src, str(tmp_path / "o"))


def test_cli(tmp_path):
    src = _src(tmp_path, 8)
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "data_pipelines.partial", *a], cwd=ROOT, capture_output=True, text=True
    )
    r = run("--src", src, "--out", str(tmp_path / "p"), "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / "p" / MANIFEST))["seed"] == 3 and "# ids" in r.stdout
    r = run("--src", str(tmp_path / "nope"), "--out", str(tmp_path / "q"))
    assert r.returncode == 2 and "not in Market layout" in r.stderr
