"""A run's typed options, built and checked once at start-up (`validate`, called by gldfa_jax.main before any
data is read or function compiled). The library takes these typed objects, not ConfigDict sections: LSAOptions
(gldfa_jax.lsa), LossOptions (gldfa_jax.losses), EvalOptions (gldfa_jax.evaluation), IndexOptions
(gldfa_jax.gallery_index) and AugmentParams (data_pipelines.augment); every error names the config field, its
value and the fix."""

from typing import NamedTuple

from data_pipelines import optional
from data_pipelines.augment import AugmentParams, augment_params
from gldfa_jax.checks import check_int
from gldfa_jax.evaluation import EvalOptions
from gldfa_jax.experiment_data import SOURCES
from gldfa_jax.gallery_index import IndexOptions
from gldfa_jax.losses import LossOptions
from gldfa_jax.lsa import LSAOptions
from gldfa_jax.model import check_model_config

IMAGE_STORES = ("auto", "device", "host")


class Options(NamedTuple):
    lsa: LSAOptions
    loss: LossOptions
    eval: EvalOptions
    augment: AugmentParams
    index: IndexOptions


def _check_fraction(name: str, value, low_open: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 < value <= 1 if low_open else 0 <= value <= 1)
    ):
        bounds = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}.")


def _check_train(t) -> None:
    check_int("train.epochs", t.epochs)
    for name in ("steps_per_epoch", "eval_every", "checkpoint_every", "checkpoint_every_steps"):
        check_int(f"train.{name}", t[name], 0, " (0 = off / derived)")
    check_int("train.keep_checkpoints", t.keep_checkpoints)
    check_int("train.log_every", t.log_every)
    if t.image_store not in IMAGE_STORES:
        raise ValueError(f"train.image_store={t.image_store!r}; choose one of {IMAGE_STORES}.")
    _check_fraction("train.device_image_fraction", t.device_image_fraction, low_open=True)
    if t.scale_lr and not t.batch_per_device:
        raise ValueError("train.scale_lr=True needs train.batch_per_device=True (the batch it scales with).")
    if not t.loss_scale_init >= 1.0:
        raise ValueError(f"train.loss_scale_init={t.loss_scale_init} must be >= 1 (e.g. 2**15).")
    check_int("train.loss_scale_period", t.loss_scale_period)


def _check_optim(o) -> None:
    if not o.lr > 0:
        raise ValueError(f"optim.lr={o.lr} must be > 0 (the paper's: 3.5e-3).")
    if list(o.decay_epochs) != sorted(o.decay_epochs) or any(e < 0 for e in o.decay_epochs):
        raise ValueError(
            f"optim.decay_epochs={tuple(o.decay_epochs)} must be ascending epochs >= 0 (paper: (100, 200))."
        )
    _check_fraction("optim.decay_factor", o.decay_factor, low_open=True)
    if not o.weight_decay >= 0 or not o.warmup_epochs >= 0:
        raise ValueError(f"optim.weight_decay={o.weight_decay} and optim.warmup_epochs={o.warmup_epochs} must be >= 0.")
    _check_fraction("optim.warmup_factor", o.warmup_factor, low_open=True)


def _check_data(d) -> None:
    for name in ("height", "width", "num_identities", "num_instances"):
        check_int(f"data.{name}", d[name])
    if d.source not in SOURCES:
        raise ValueError(f"data.source={d.source!r}; choose one of {SOURCES} (--config.data.source=folder or tfds).")
    if d.source == "tfds" and not optional.installed("tensorflow_datasets"):
        raise ValueError(optional.missing_extra("tfds", "data.source='tfds'") + " Or set --config.data.source=folder.")
    if d.num_instances < 2:
        raise ValueError(
            f"data.num_instances={d.num_instances}: a triplet needs K >= 2 images per identity (paper: 4)."
        )


def validate(config) -> Options:
    """Check every field of a run's config (ValueError: the field, the value, the fix) and return its typed
    options. Runs once, at start-up; the library then trusts what it is given."""
    _check_data(config.data)
    check_model_config(config.model)
    _check_train(config.train)
    _check_optim(config.optim)
    check_int("eval.batch_size", config.eval.batch_size)
    return Options(
        lsa=LSAOptions.from_config(config.lsa),
        loss=LossOptions.from_config(config),
        eval=EvalOptions.from_config(config),
        augment=augment_params(config.data),
        index=IndexOptions.from_config(config),
    )
