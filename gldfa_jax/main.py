"""Command line: train or evaluate GLDFA-Net from an experiment config (issue 3 item 7).

  python -m gldfa_jax.main --config experiments/synthetic.py            # workdir defaults to runs/synthetic
  python -m gldfa_jax.main --config experiments/market.py --workdir runs/market --config.train.epochs=2
  python -m gldfa_jax.main --config experiments/market.py --workdir runs/market --mode eval [--checkpoint PATH]
  python -m gldfa_jax.main --config experiments/market.py --workdir runs/market_on_duke --mode eval \
      --checkpoint runs/market --config.data.root=data/dukemtmc   # cross-domain: train on one, test on another

Writes into the workdir: results.json, metrics.jsonl, a TensorBoard event file, checkpoints/ (with
config.json) and best/. Training resumes from the latest checkpoint in the workdir automatically.
"""
import difflib
import json
import logging as std_logging
import os
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. experiments/market.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory for checkpoints, metrics and results.json "
                                "(default: runs/<config file name>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes automatically) or eval.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host; "
                                  "coordinator address etc. from the environment, see JAX docs).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "eval: a run's workdir, its checkpoints/ or best/ folder, "
                                  "or one step folder (default: the latest in WORKDIR/checkpoints). With "
                                  "--config.data.root=OTHER it evaluates on another dataset (cross-domain); "
                                  "OTHER needs only query/ and bounding_box_test/.")


class UsageError(ValueError):
    """Bad command-line input; reported without a traceback."""


def available_configs() -> list:
    from experiments import available_configs as configs
    return configs()


def _config_path(argv) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def parse_flags(argv):
    """absl flag parsing with bad input turned into one clear message (exit 2, no traceback)."""
    path = _config_path(argv)
    if path is not None and not os.path.exists(path.split(":", 1)[0]):
        close = difflib.get_close_matches(os.path.basename(path), available_configs(), n=3)
        hint = f" Did you mean {', '.join('experiments/' + c for c in close)}?" if close else ""
        _fail(f"config file {path!r} does not exist.{hint} Available configs in experiments/: "
              f"{', '.join(available_configs())}", code=2)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}\nRun with --helpfull for the flags.", code=2)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections reports unknown override keys as AttributeError/KeyError with close matches.
        message = str(e).strip("'\"").replace("\\n", "\n").replace("\\'", "'")
        _fail(f"bad config override: {message}", code=2)


def _fail(message: str, code: int = 1):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_workdir(workdir: str | None) -> str:
    """Create the workdir and prove it is writable before any work starts."""
    if not workdir:
        raise UsageError("--workdir is required (the run directory for checkpoints and results).")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"workdir {workdir!r} is not writable ({e.strerror}); choose another --workdir.") from e
    return workdir


class _QuietLibraryInfo(std_logging.Filter):
    """Orbax logs every save step at INFO; keep its warnings, drop the chatter."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def log_devices() -> None:
    devices = jax.local_devices()
    logging.info("JAX %s on %s: %d local device(s) %s; %d process(es)", jax.__version__, jax.default_backend(),
                 len(devices), [str(d) for d in devices], jax.process_count())


def write_results(workdir: str, results: dict) -> str:
    path = os.path.join(workdir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path


def evaluate_checkpoint(config, workdir: str, data, checkpoint: str | None = None) -> dict:
    """Restore a checkpoint (a run's workdir, its checkpoints/ or best/ folder, or one step folder; default
    WORKDIR/checkpoints, latest) and evaluate it on data's query/gallery. The classifier's size comes from
    the checkpoint, so the evaluated dataset may be another one (cross-domain) without a training split."""
    from gldfa_jax import checkpointing, retrieve, train

    folder, step = retrieve.checkpoint_location(checkpoint or os.path.join(workdir, checkpointing.LATEST_DIR))
    model, variables, meta = retrieve.restore_model(config, folder, step)
    logging.info("evaluating checkpoint %s at step %d (epoch %d) on %s", folder, meta["step"], meta["epoch"],
                 config.data.root)
    q_feats, g_feats, evaluated = train.evaluate_model(model, variables, data, config)
    train.write_reports(workdir, q_feats, g_feats, data, config, meta["steps_per_epoch"], evaluated)
    return evaluated.results


def run(config, workdir: str, mode: str = "train", checkpoint: str | None = None) -> dict:
    """Train or evaluate; writes WORKDIR/results.json and returns the results dict."""
    from gldfa_jax import inference, train
    from gldfa_jax.experiment_data import load_experiment_data
    from gldfa_jax.metric_writer import MetricWriter

    check_workdir(workdir)
    log_devices()
    data = load_experiment_data(config.data, need_train=mode == "train")
    if mode == "train":
        writer = MetricWriter(workdir)
        try:
            results = train.train_and_evaluate(config, workdir, data, writer)
        finally:
            writer.close()
    else:
        results = evaluate_checkpoint(config, workdir, data, checkpoint)
    path = write_results(workdir, results)
    print(inference.format_table(results))
    print(f"results written to {path}")
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from gldfa_jax.experiment_data import DataRootError
    from gldfa_jax.train import NonFiniteLossError

    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    config = _CONFIG.value
    if config is None:
        _fail(f"--config is required; available configs in experiments/: {', '.join(available_configs())}", 2)
    workdir = _WORKDIR.value or os.path.join(
        "runs", os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0])
    logging.info("workdir: %s", os.path.abspath(workdir))
    try:
        run(config, workdir, _MODE.value, _CHECKPOINT.value)
    except (UsageError, DataRootError, NonFiniteLossError, ValueError, FileNotFoundError) as e:
        logging.debug("%s", traceback.format_exc())  # shown with -v 1
        _fail(str(e), code=2 if isinstance(e, UsageError) else 1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
