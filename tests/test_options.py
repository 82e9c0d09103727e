"""Typed options and the one start-up validation (gldfa_jax.options): every shipped config validates, a bad field
fails with its name, value and fix, the option objects default to the config's values, and a run saved with the
old LSA keys (loss.window, loss.normalize_stripes, eval.lsa_weight) reads them from config.lsa."""

import importlib
import sys

import ml_collections
import pytest

from gldfa_jax import config as config_lib
from gldfa_jax import evaluation, options
from gldfa_jax.lsa import LSAOptions


@pytest.mark.parametrize("name", config_lib.available_configs("experiments"))
def test_every_experiment_config_validates(name):
    config = importlib.import_module(f"experiments.{name[:-3]}").get_config()
    typed = options.validate(config)
    assert typed.loss.lsa == typed.eval.lsa == typed.lsa == LSAOptions.from_config(config.lsa)


def test_options_default_to_the_config():
    typed = options.validate(config_lib.get_config())
    assert typed.eval == evaluation.EvalOptions() and typed.lsa == LSAOptions()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lsa.window", -1, r"lsa.window must be an integer >= 1, got -1"),
        ("lsa.window", 2.5, r"lsa.window must be an integer"),
        ("lsa.weight", -0.5, r"lsa.weight=-0.5 is negative"),
        ("lsa.normalize", "yes", r"lsa.normalize must be True or False, got 'yes'"),
        ("loss.triplet", "triplehard", r"loss.triplet='triplehard' is not supported"),
        ("eval.k1", 0, r"eval.k1 must be an integer >= 1, got 0"),
        ("eval.lambda_value", 2.0, r"eval.lambda_value must be a number in \[0, 1\]"),
        ("eval.best_mode", "cosine", r"eval.best_mode='cosine'"),
        ("eval.batch_size", 0, r"eval.batch_size must be an integer >= 1, got 0"),
        ("model.backbone", "vit", r"model.backbone='vit' is not supported"),
        ("data.erase_prob", 1.5, r"data.erase_prob=1.5 must lie in \[0, 1\]"),
        ("data.source", "s3", r"data.source='s3'; choose one of"),
        ("data.num_instances", 1, r"data.num_instances=1: a triplet needs K >= 2"),
        ("train.image_store", "disk", r"train.image_store='disk'"),
        ("train.epochs", 0, r"train.epochs must be an integer >= 1, got 0"),
        ("optim.lr", 0.0, r"optim.lr=0.0 must be > 0"),
        ("optim.decay_epochs", (200, 100), r"optim.decay_epochs=\(200, 100\) must be ascending"),
        ("retrieval.local_dtype", "int8", r"retrieval.local_dtype='int8'; choose one of"),
    ],
)
def test_a_bad_field_is_named_with_its_value(field, value, message):
    config = config_lib.get_config()
    section, key = field.split(".")
    config[section] = ml_collections.ConfigDict({**config[section].to_dict(), key: value})  # any type, as JSON gives
    with pytest.raises(ValueError, match=message):
        options.validate(config)


def test_tfds_without_its_extra_fails_at_start_up_with_the_install_command(monkeypatch):
    config = config_lib.get_config()
    config.data.source = "tfds"
    options.validate(config)  # the [dev] extra installs it
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # not importable, as on the core install
    with pytest.raises(ValueError, match=r"data.source='tfds' needs .* pip install 'gldfa-jax\[tfds\]'.*source=folder"):
        options.validate(config)


def test_a_run_saved_with_the_old_lsa_keys_reads_them_from_config_lsa():
    saved = config_lib.get_config().to_dict()
    del saved["lsa"]
    saved["loss"].update(window=1, normalize_stripes=True)
    saved["eval"]["lsa_weight"] = 0.5
    config = config_lib.with_defaults(saved)
    assert LSAOptions.from_config(config.lsa) == LSAOptions(window=1, normalize=True, weight=0.5)
    assert "window" not in config.loss and "lsa_weight" not in config.eval
    options.validate(config)
    # A run saved after the move keeps its own values.
    assert config_lib.with_defaults(config.to_dict()).lsa == config.lsa
