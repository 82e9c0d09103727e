"""Orbax checkpoints of the TrainState.

Layout under a run's workdir:
  checkpoints/<step>/{state,meta}   the last `train.keep_checkpoints`, every `train.checkpoint_every` epochs,
                                    every `train.checkpoint_every_steps` steps (if set) and at the end
  checkpoints/config.json           the config the run was started with
  best/<step>/{state,meta}          the single best checkpoint by mAP

`state` is the TrainState as a plain nested dict (flax.serialization), so restoring needs only a template
built from the config; `meta` is JSON ({"epoch", "step", "steps_per_epoch", "metrics", ...}). `load_checkpoint`
restores a trained model for evaluation, export and retrieval from any of those paths.
"""

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from flax.traverse_util import flatten_dict

from gldfa_jax import config as config_lib
from gldfa_jax import train
from gldfa_jax.model import build_model

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
CONFIG_FILE = "config.json"


def _manager(directory: str, max_to_keep: int | None) -> ocp.CheckpointManager:
    """A manager whose multi-process barriers are named after its folder: the latest and best managers save the
    same step at once, and barriers of the same name would collide ("Barrier ... is already ongoing")."""
    prefix = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=os.path.basename(directory))
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, multiprocessing_options=prefix),
    )


def check_shapes(restored: dict, template: dict) -> None:
    """Raise ValueError naming the first parameter whose shape (or presence) differs."""
    got = flatten_dict(restored, sep="/")
    want = flatten_dict(template, sep="/")
    for key in sorted(set(got) | set(want), key=lambda k: (not k.startswith("params/"), k)):  # weights first
        if key not in got:
            raise ValueError(
                f"checkpoint has no entry {key!r} that the config's model needs: it was written "
                f"for a different model config (compare its config.json with yours)."
            )
        if key not in want:
            raise ValueError(
                f"checkpoint entry {key!r} does not exist in the model built from the config: it was "
                f"written for a different model config (compare its config.json with yours)."
            )
        if np.shape(got[key]) != np.shape(want[key]):
            raise ValueError(
                f"checkpoint parameter {key!r} has shape {np.shape(got[key])} but the config's model "
                f"expects {np.shape(want[key])}: the checkpoint was written for a different model "
                f"config (e.g. model.depth / model.width_multiplier / model.num_stripes / number of "
                f"identities); use the config it was trained with."
            )


class CheckpointStore:
    """The latest-n and best-by-mAP checkpoint managers of one run directory."""

    def __init__(self, workdir: str, keep: int = 3):
        self.directory = os.path.join(workdir, LATEST_DIR)
        self.latest = _manager(self.directory, keep)
        self.best = _manager(os.path.join(workdir, BEST_DIR), 1)

    def save_config(self, config) -> None:
        """Written by process 0 alone (every process of a multi-process run has the same config)."""
        if jax.process_index() != 0:
            return
        with open(os.path.join(self.directory, CONFIG_FILE), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_map(self) -> float:
        """mAP of the best checkpoint so far, -inf if none."""
        step = self.best.latest_step()
        return -np.inf if step is None else float(_restore_meta(self.best, step)["best_map"])

    def save(self, state: Any, meta: dict, best_map: float | None = None) -> None:
        """Save the (unreplicated) state at meta["step"]; also as the best one when `best_map` is given."""
        step = int(meta["step"])
        items = dict(state=ocp.args.StandardSave(_to_numpy(state)))
        if step not in self.latest.all_steps():
            self.latest.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **items), force=True)
        if best_map is not None:
            self.best.save(
                step,
                args=ocp.args.Composite(meta=ocp.args.JsonSave({**meta, "best_map": best_map}), **items),
                force=True,
            )

    def wait(self) -> None:
        for manager in (self.latest, self.best):
            manager.wait_until_finished()

    def close(self) -> None:
        for manager in (self.latest, self.best):
            manager.close()


def _to_numpy(state: Any) -> dict:
    return jax.tree.map(np.asarray, serialization.to_state_dict(state))


def _restore_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def restore(manager_or_path, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restore (state shaped like `template`, meta) from a CheckpointManager, a checkpoint directory
    (…/checkpoints, latest step) or one step's directory (…/checkpoints/120)."""
    manager = manager_or_path
    if isinstance(manager_or_path, str):
        path = os.path.abspath(manager_or_path)
        if os.path.isdir(os.path.join(path, "state")):
            path, step = os.path.dirname(path), int(os.path.basename(path))
        if not os.path.isdir(path):
            raise ValueError(
                f"checkpoint path {manager_or_path!r} does not exist; pass a run's "
                f"'checkpoints' folder or one of its step folders."
            )
        manager = ocp.CheckpointManager(path)
    if step is None:
        step = manager.latest_step()
        if step is None:
            raise ValueError(f"no checkpoint found in {manager.directory}; train first or pass --checkpoint.")
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
    )
    state_dict = jax.tree.map(np.asarray, restored.state)
    template_dict = serialization.to_state_dict(template)
    check_shapes(state_dict, template_dict)
    return serialization.from_state_dict(template, state_dict), dict(restored.meta)


def num_classes(checkpoint_dir: str, step: int) -> int:
    """Identities the checkpoint's classifier was trained on (its kernel's last axis), read from metadata only."""
    manager = ocp.CheckpointManager(
        os.path.abspath(checkpoint_dir),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
    )
    return int(manager.item_metadata(step)["state"]["params"]["classifier"]["kernel"].shape[-1])


def read_config_json(checkpoint_dir: str) -> dict | None:
    path = os.path.join(checkpoint_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def checkpoint_location(path: str) -> tuple[str, int | None]:
    """A run workdir, its checkpoints/ (or best/) folder, or one step folder -> (checkpoint folder, step or None)."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.dirname(path), int(os.path.basename(path))
    if os.path.isdir(os.path.join(path, LATEST_DIR)):
        return os.path.join(path, LATEST_DIR), None
    if os.path.isdir(path):
        return path, None
    raise ValueError(
        f"--checkpoint {path!r} does not exist; pass a run's workdir, its 'checkpoints' "
        "folder or one of its step folders."
    )


def load_checkpoint(path: str):
    """Checkpoint -> (config, model, variables {"params", "batch_stats"}, step).

    The config is the run's checkpoints/config.json; the number of identities comes from the classifier's
    shape in the checkpoint, so neither the training data nor the config file is needed.
    """
    folder, step = checkpoint_location(path)
    config_json = read_config_json(folder) or read_config_json(os.path.join(os.path.dirname(folder), LATEST_DIR))
    if config_json is None:
        raise ValueError(
            f"no {CONFIG_FILE} beside the checkpoint {folder}: it is written by "
            "gldfa_jax.main into WORKDIR/checkpoints; pass that run's workdir."
        )
    config = config_lib.with_defaults(config_json)
    model, variables, meta = restore_model(config, folder, step)
    return config, model, variables, int(meta["step"])


def restore_model(config, folder: str, step: int | None = None):
    """(model, variables {"params", "batch_stats"}, meta) of a checkpoint folder's step (None: the latest), the
    model built from `config.model` with the checkpoint's number of identities (no training data needed)."""
    step = ocp.CheckpointManager(folder).latest_step() if step is None else step
    if step is None:
        raise ValueError(f"no checkpoint step in {folder}; train first (python -m gldfa_jax.main ...).")
    classes = num_classes(folder, step)
    model = build_model(config.model, classes)
    shape = (config.data.height, config.data.width, 3)
    tx = train.make_optimizer(config.optim, 1, train.loss_scale_for(config, model))
    template = train.state_template(model, tx, classes, shape)  # restoring needs no initialised weights
    state, meta = restore(os.path.join(folder, str(step)), template)
    return model, {"params": state.params, "batch_stats": state.batch_stats}, meta
