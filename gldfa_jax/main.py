"""Command line: train or evaluate GLDFA-Net from an experiment config.

  python -m gldfa_jax.main --config experiments/synthetic.py            # workdir defaults to runs/synthetic
  python -m gldfa_jax.main --config experiments/market.py --workdir runs/market --config.train.epochs=2
  python -m gldfa_jax.main --config experiments/market.py --workdir runs/market --mode eval [--checkpoint PATH]
  python -m gldfa_jax.main --config experiments/market.py --workdir runs/market_on_duke --mode eval \
      --checkpoint runs/market --config.data.root=data/dukemtmc   # cross-domain: train on one, test on another

Writes into the workdir: results.json, metrics.jsonl, a TensorBoard event file, checkpoints/ (with
config.json) and best/. Training resumes from the latest checkpoint in the workdir automatically.

Several processes (one per host) train one model when each is started with the same command plus
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I (or --distributed alone under SLURM / on Cloud
TPU); the workdir must be one folder every process sees (a shared file system).
"""

import difflib
import inspect
import logging as std_logging
import os
import socket
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gldfa_jax import config as config_lib
from gldfa_jax import watchdog

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/market.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory for checkpoints, metrics and results.json (default: runs/<config file name>)."
)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes automatically) or eval.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Multi-process: call jax.distributed.initialize() first, "
    "detecting the cluster (SLURM, Open MPI, Cloud TPU) from the environment.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process: HOST:PORT where process 0 serves the "
    "coordination service, the same in every process (implies --distributed).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process: number of processes in all (with --coordinator_address)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-process: this process's index, 0 .. num_processes-1 (with --coordinator_address)."
)
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout",
    300,
    "Multi-process: seconds to wait for every process to connect; a process silent for half of it "
    "(stopped, hung or dead) is named in the others' logs and they exit with code 3.",
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "eval: a run's workdir, its checkpoints/ or best/ folder, "
    "or one step folder (default: the latest in WORKDIR/checkpoints). With "
    "--config.data.root=OTHER it evaluates on another dataset (cross-domain); "
    "OTHER needs only query/ and bounding_box_test/.",
)


class UsageError(ValueError):
    """Bad command-line input; reported without a traceback."""


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
        folder = os.path.dirname(path) or "."
        names = config_lib.available_configs(folder)
        close = difflib.get_close_matches(os.path.basename(path), names, n=3)
        hint = f" Did you mean {', '.join(os.path.join(folder, c) for c in close)}?" if close else ""
        _fail(f"config file {path!r} does not exist.{hint} Available configs in {folder}/: {', '.join(names)}", code=2)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}\nRun with --helpfull for the flags.", code=2)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _fail(f"bad config override: {config_lib.override_error_message(e)}", code=2)


def _fail(message: str, code: int = 1):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_workdir(workdir: str | None) -> str:
    """Create the workdir and prove it is writable before any work starts."""
    if not workdir:
        raise UsageError("--workdir is required (the run directory for checkpoints and results).")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{socket.gethostname()}.{os.getpid()}")  # one per process
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"workdir {workdir!r} is not writable ({e.strerror}); choose another --workdir.") from e
    return workdir


def distributed_options(
    distributed: bool, coordinator_address: str | None, num_processes: int | None, process_id: int | None, timeout: int
) -> dict | None:
    """jax.distributed.initialize keyword arguments from the flags; None for a single-process run. Explicit
    addresses come as a complete set: a process with a partial one would wait for peers that never connect."""
    explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    given = {k: v for k, v in explicit.items() if v is not None}
    if not (distributed or given):
        return None
    if given and len(given) < len(explicit):
        missing = ", ".join(f"--{k}" for k in explicit if k not in given)
        shown = " ".join(f"--{k}={v}" for k, v in given.items())
        raise UsageError(
            f"{shown} needs {missing} too: give --coordinator_address=HOST:PORT (process 0's host and a "
            f"free port), --num_processes=N and --process_id=I together, or --distributed alone to "
            f"detect them from the cluster (SLURM, Cloud TPU)."
        )
    if given:
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(
                f"--coordinator_address={coordinator_address!r} is not HOST:PORT; use e.g. "
                f"--coordinator_address=node0:29500 (process 0's host and a free port)."
            )
        if num_processes < 1:
            raise UsageError(f"--num_processes={num_processes} must be at least 1.")
        if not 0 <= process_id < num_processes:
            raise UsageError(
                f"--process_id={process_id} is out of range for --num_processes={num_processes}; "
                f"number the processes 0 .. {num_processes - 1}."
            )
    if timeout < 1:
        raise UsageError(f"--distributed_timeout={timeout} must be at least 1 second.")
    # JAX's heartbeat is the backstop: at twice the timeout it leaves the watchdog (half the timeout) to name
    # the silent process first, where JAX's own abort names none.
    return {**given, "initialization_timeout": timeout, "heartbeat_timeout_seconds": 2 * timeout}


def initialize_distributed(options: dict) -> watchdog.Watchdog:
    """jax.distributed.initialize with CPU collectives over gloo (older jax has none by default, and the CPU
    backend picks them when it starts, so before any computation), and the started peer watchdog. jax < 0.7
    names its heartbeat options differently: there the heartbeat keeps jax's default."""
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    accepted = inspect.signature(jax.distributed.initialize).parameters
    explicit = {k: v for k, v in options.items() if k in ("coordinator_address", "num_processes", "process_id")}
    logging.info(
        "joining the multi-process run: %s (waiting up to %d s for every process)",
        explicit or "cluster detected from the environment",
        options["initialization_timeout"],
    )
    try:
        jax.distributed.initialize(**{k: v for k, v in options.items() if k in accepted})
    except ValueError as e:  # e.g. --distributed where no cluster can be detected
        raise UsageError(
            f"jax.distributed.initialize failed: {e} Outside SLURM / Open MPI / Cloud TPU give "
            f"--coordinator_address=HOST:PORT --num_processes=N --process_id=I."
        ) from e
    return watchdog.Watchdog(options["initialization_timeout"]).start()


class _QuietLibraryInfo(std_logging.Filter):
    """Orbax logs every save step at INFO; keep its warnings, drop the chatter."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def log_devices() -> None:
    devices = jax.local_devices()
    logging.info(
        "JAX %s on %s: %d local device(s) %s; %d process(es)",
        jax.__version__,
        jax.default_backend(),
        len(devices),
        [str(d) for d in devices],
        jax.process_count(),
    )


def evaluate_checkpoint(config, workdir: str, data, checkpoint: str | None = None) -> dict:
    """Restore a checkpoint (a run's workdir, its checkpoints/ or best/ folder, or one step folder; default
    WORKDIR/checkpoints, latest) and evaluate it on data's query/gallery. The classifier's size comes from
    the checkpoint, so the evaluated dataset may be another one (cross-domain) without a training split."""
    from gldfa_jax import checkpointing, loop, reports

    folder, step = checkpointing.checkpoint_location(checkpoint or os.path.join(workdir, checkpointing.LATEST_DIR))
    model, variables, meta = checkpointing.restore_model(config, folder, step)
    logging.info(
        "evaluating checkpoint %s at step %d (epoch %d) on %s", folder, meta["step"], meta["epoch"], config.data.root
    )
    q_feats, g_feats, evaluated = loop.evaluate_model(model, variables, data, config)
    reports.write_run_reports(workdir, evaluated, q_feats, g_feats, data, config, meta["steps_per_epoch"])
    return evaluated.results


def use_compilation_cache(path: str) -> None:
    """config.compilation_cache_dir: a folder for jax's persistent compilation cache, so a second run (or
    `--mode eval` after training) loads the train step, the network and the evaluation's functions instead of
    compiling them again; "" leaves jax's setting alone (off unless JAX_COMPILATION_CACHE_DIR is set)."""
    if not isinstance(path, str):
        raise UsageError(f"compilation_cache_dir must be a folder path or '' (off), got {path!r}.")
    if path:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
        logging.info("persistent compilation cache: %s", os.path.abspath(path))


def run(config, workdir: str, mode: str = "train", checkpoint: str | None = None) -> dict:
    """Train or evaluate; writes WORKDIR/results.json (process 0 of a multi-process run) and returns the results."""
    from jax.experimental import multihost_utils

    from gldfa_jax import evaluation, loop, options, reports
    from gldfa_jax.experiment_data import ensure_data, load_experiment_data
    from gldfa_jax.metric_writer import MetricWriter

    check_workdir(workdir)
    try:
        options.validate(config)  # a bad setting fails now, not after the data is read or the first epoch
    except ValueError as e:
        raise UsageError(str(e)) from e
    use_compilation_cache(config.compilation_cache_dir)
    log_devices()
    lead = jax.process_index() == 0  # the one process that writes the run's files (the others compute the same)
    if jax.process_count() > 1:  # a synthetic world is generated once, by process 0, before anyone reads it
        if lead:
            ensure_data(config.data)
        multihost_utils.sync_global_devices("gldfa_jax.main: data ready")
    data = load_experiment_data(config.data, need_train=mode == "train")
    if mode == "train":
        writer = MetricWriter(workdir) if lead else None
        try:
            results = loop.train_and_evaluate(config, workdir, data, writer)
        finally:
            if writer:
                writer.close()
    else:
        results = evaluate_checkpoint(config, workdir, data, checkpoint)
    if lead:
        path = reports.write_results(workdir, results)
        print(evaluation.format_table(results, config.eval.protocol))
        print(f"results written to {path}")
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from gldfa_jax.experiment_data import DataRootError
    from gldfa_jax.loop import NonFiniteLossError

    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    config = _CONFIG.value
    if config is None:
        _fail(
            "--config is required; available configs in experiments/: "
            f"{', '.join(config_lib.available_configs('experiments'))}",
            2,
        )
    try:
        options = distributed_options(
            _DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _DISTRIBUTED_TIMEOUT.value
        )
        peers = initialize_distributed(options) if options is not None else None
    except UsageError as e:
        _fail(str(e), code=2)
    workdir = _WORKDIR.value or os.path.join(
        "runs", os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0]
    )
    logging.info("workdir: %s", os.path.abspath(workdir))
    try:
        run(config, workdir, _MODE.value, _CHECKPOINT.value)
    except (UsageError, DataRootError, NonFiniteLossError, ValueError, FileNotFoundError) as e:
        logging.debug("%s", traceback.format_exc())  # shown with -v 1
        hint = (
            "\nEvery process of a multi-process run stops when one does; restart them all with the same "
            "command to resume from the latest checkpoint."
            if options
            else ""
        )
        _fail(str(e) + hint, code=2 if isinstance(e, UsageError) else 1)
    if peers:
        peers.finish()


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
