"""load_experiment_data: data.source "folder" and "tfds" give the same splits, in RAM or decoded per batch when
they would not fit; saved configs of older runs still load."""

import logging
import os
import sys

import numpy as np
import pytest

from data_pipelines.images import LazyImages
from gldfa_jax import experiment_data
from gldfa_jax.config import get_config, with_defaults

from helpers.data import small_market, write_image

SPLITS = ("train", "query", "gallery")


def _data_config(root, tfds_dir, source="folder"):
    c = get_config().data
    c.name, c.root, c.height, c.width = "market_layout", str(root), 32, 16
    c.source, c.tfds_dir = source, str(tfds_dir)
    return c


def _assert_same(a, b, lazy: bool) -> None:
    assert a.num_classes == b.num_classes
    for name in SPLITS:
        x, y = getattr(a, name), getattr(b, name)
        assert isinstance(y.images, LazyImages if lazy and len(x.pids) else np.ndarray), name
        np.testing.assert_array_equal(np.asarray(y.images), x.images, err_msg=name)
        np.testing.assert_array_equal(y.pids, x.pids, err_msg=name)
        np.testing.assert_array_equal(y.camids, x.camids, err_msg=name)


def test_tfds_source_gives_the_folder_splits(tmp_path, caplog):
    pytest.importorskip("tensorflow_datasets")
    small_market(str(tmp_path / "world"))
    folder = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds"))
    assert not (tmp_path / "tfds").exists()  # a set that fits in RAM never makes a copy
    with caplog.at_level(logging.INFO):
        tfds = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds", "tfds"))
    assert "preparing the TFDS copy" in caplog.text
    _assert_same(folder, tfds, lazy=False)
    caplog.clear()
    with caplog.at_level(logging.INFO):  # evaluation reuses the copy and reads no train images
        evaluation = experiment_data.load_experiment_data(
            _data_config(tmp_path / "world", tmp_path / "tfds", "tfds"), need_train=False
        )
    assert "preparing" not in caplog.text and len(evaluation.train.images) == 0
    np.testing.assert_array_equal(evaluation.gallery.images, folder.gallery.images)


def test_splits_beyond_the_ram_share_are_decoded_per_batch_from_tfds(tmp_path, caplog, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    small_market(str(tmp_path / "world"))
    folder = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds"))
    monkeypatch.setattr(experiment_data, "RAM_FRACTION", 1e-12)  # the tiny world counts as "large"
    with caplog.at_level(logging.INFO):
        large = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds"))
    assert "decoding them per batch from the TFDS copy of data.root in " + str(tmp_path / "tfds") in caplog.text
    _assert_same(folder, large, lazy=True)
    idx = np.array([[6, 0], [3, 3]])  # a training batch: any order, repeats
    np.testing.assert_array_equal(large.train.images[idx], folder.train.images[idx])
    # the files change: the copy is rebuilt, not read stale
    write_image(os.path.join(tmp_path / "world" / "query", sorted(os.listdir(tmp_path / "world" / "query"))[0]), 9)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        changed = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds"))
    assert "is stale" in caplog.text
    assert not np.array_equal(changed.query.images[0], folder.query.images[0])
    np.testing.assert_array_equal(changed.query.images[1:], folder.query.images[1:])


def test_large_splits_without_the_tfds_extra_decode_into_ram_with_the_install_command(tmp_path, caplog, monkeypatch):
    small_market(str(tmp_path / "world"))
    monkeypatch.setattr(experiment_data, "RAM_FRACTION", 1e-12)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # not importable, as on the core install
    with caplog.at_level(logging.WARNING):
        data = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds"))
    assert "pip install 'gldfa-jax[tfds]'" in caplog.text
    assert isinstance(data.train.images, np.ndarray) and not (tmp_path / "tfds").exists()


def test_unknown_source_names_the_field_and_the_choices(tmp_path):
    small_market(str(tmp_path / "world"))
    with pytest.raises(ValueError, match=r"data.source='tfrecord' is not one of \('folder', 'tfds'\)"):
        experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "tfds", "tfrecord"))


def test_a_saved_config_with_the_retired_cache_dir_still_loads(tmp_path):
    """Runs saved before data.source kept their decoded images in data.cache_dir: --mode eval of such a run
    reads its saved config over today's defaults, and the old key is carried along unread."""
    small_market(str(tmp_path / "world"))
    saved = {"data": {"name": "market_layout", "root": str(tmp_path / "world"), "height": 32, "width": 16}}
    saved["data"]["cache_dir"] = str(tmp_path / "old_cache")
    config = with_defaults(saved)
    assert config.data.source == "folder"
    data = experiment_data.load_experiment_data(config.data, need_train=False)
    assert len(data.query.pids) == 2 and not (tmp_path / "old_cache").exists()
