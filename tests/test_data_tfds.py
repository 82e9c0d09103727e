"""TFDS builders: build (array_record, no TensorFlow) and read back on a tiny fixture."""

import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

from data_pipelines import tfds_builders  # noqa: E402
from data_pipelines.datasets import get_dataset  # noqa: E402
from data_pipelines.images import load_images  # noqa: E402

from helpers.data import small_market, write_image  # noqa: E402


def test_build_and_read_back(tmp_path):
    manual = str(tmp_path / "manual")
    small_market(manual)
    gray = write_image(os.path.join(manual, "bounding_box_train", "0009_c2s1_000099_00.png"), seed=5, mode="L")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = get_dataset("market_layout", manual)
        builder = tfds_builders.build("market_layout", manual, str(tmp_path / "tfds"))
    assert {s: builder.info.splits[s].num_examples for s in ("train", "query", "gallery")} == {
        s: len(ds.split(s)) for s in ("train", "query", "gallery")
    }
    assert any(f.endswith(".array_record-00000-of-00001") for f in os.listdir(builder.data_dir))
    expected = {os.path.basename(r.path): (r.pid, r.camid) for r in ds.train}
    src = tfds_builders.data_source("market_layout", str(tmp_path / "tfds"))["train"]
    got = {}
    for i in range(len(src)):
        ex = src[i]
        name = ex["file_name"].decode() if isinstance(ex["file_name"], bytes) else ex["file_name"]
        got[name] = (int(ex["pid"]), int(ex["camid"]))
        if name == os.path.basename(gray):  # the grayscale file was stored as RGB
            assert Image.open(io.BytesIO(ex["image"])).mode == "RGB"
    assert got == expected
    imgs, pids, camids, names = tfds_builders.load_split("market_layout", "train", str(tmp_path / "tfds"), 16, 8)
    direct, kept = load_images([next(r for r in ds.train if r.path.endswith(n)) for n in names], 16, 8, progress=False)
    np.testing.assert_array_equal(imgs, direct)  # same pixels as the folder pipeline
    assert [expected[n] for n in names] == list(zip(pids.tolist(), camids.tolist()))


def test_builder_catalogue_and_errors(tmp_path):
    assert set(tfds_builders.BUILDERS) == {
        "market1501",
        "dukemtmcreid",
        "cuhk03",
        "cuhk03_np",
        "msmt17",
        "market_layout",
    }
    for cls in tfds_builders.BUILDERS.values():
        assert cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert [c.name for c in tfds_builders.Cuhk03.BUILDER_CONFIGS] == ["labeled", "detected"]
    with pytest.raises(ValueError, match="config='both'"):
        tfds_builders.build("cuhk03", str(tmp_path), str(tmp_path / "o"), config="both")
    with pytest.raises(ValueError, match="no TFDS builder"):
        tfds_builders.build("market", str(tmp_path), str(tmp_path / "o"))


def test_builder_config_follows_the_reader_options():
    """data.options → the builder config that reads the same images; options no config reads are refused."""
    assert tfds_builders.builder_config("market_layout", {}) is None
    assert tfds_builders.builder_config("cuhk03", {}) == "labeled"  # the reader's default variant
    assert tfds_builders.builder_config("cuhk03_np", {"variant": "detected"}) == "detected"
    assert tfds_builders.builder_config("msmt17", {"include_val": True}) is None
    for name, options in (("cuhk03", {"split": "classic"}), ("msmt17", {"include_val": False})):
        with pytest.raises(ValueError, match="use data.source='folder'"):
            tfds_builders.builder_config(name, options)
