"""load_experiment_data: the in-RAM splits and the on-disk cache (data.cache_dir) hold the same pixels."""

import logging
import os

import numpy as np

from data_pipelines.images import CachedImages
from gldfa_jax import experiment_data
from gldfa_jax.config import get_config

from helpers.data import small_market


def _data_config(root, cache_dir=""):
    c = get_config().data
    c.name, c.root, c.height, c.width, c.cache_dir = "market_layout", str(root), 32, 16, str(cache_dir)
    return c


def test_cache_dir_gives_the_in_ram_splits(tmp_path, caplog):
    small_market(str(tmp_path / "world"))
    ram = experiment_data.load_experiment_data(_data_config(tmp_path / "world"))
    cached = experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "cache"))
    assert cached.num_classes == ram.num_classes == 3
    for name in ("train", "query", "gallery"):
        a, b = getattr(ram, name), getattr(cached, name)
        assert isinstance(a.images, np.ndarray) and isinstance(b.images, CachedImages), name
        np.testing.assert_array_equal(np.asarray(b.images), a.images, err_msg=name)
        np.testing.assert_array_equal(b.pids, a.pids)
        np.testing.assert_array_equal(b.camids, a.camids)
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".u8")]) == 3
    with caplog.at_level(logging.INFO):  # evaluation reuses the query and gallery caches, reads no train images
        evaluation = experiment_data.load_experiment_data(
            _data_config(tmp_path / "world", tmp_path / "cache"), need_train=False
        )
    assert caplog.text.count("reusing") == 2 and len(evaluation.train.images) == 0
    np.testing.assert_array_equal(evaluation.gallery.images[np.array([3, 0, 3])], ram.gallery.images[[3, 0, 3]])


def test_large_in_ram_decode_points_to_cache_dir(tmp_path, caplog, monkeypatch):
    small_market(str(tmp_path / "world"))
    monkeypatch.setattr(experiment_data, "RAM_WARN_FRACTION", 1e-12)  # the tiny world counts as "large"
    with caplog.at_level(logging.WARNING):
        experiment_data.load_experiment_data(_data_config(tmp_path / "world"))
        assert "set data.cache_dir" in caplog.text
        caplog.clear()
        experiment_data.load_experiment_data(_data_config(tmp_path / "world", tmp_path / "cache"))
        assert "set data.cache_dir" not in caplog.text
