"""Helpers for tests that drive `python -m gldfa_jax.main` in subprocesses on a tiny CUHK03-sample config.

One trained run is shared by the test modules (`trained_workdir`); a persistent XLA compilation cache in the
temporary root lets later subprocesses skip recompiling the same tiny network.
"""

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile

from helpers.data import CUHK03_SAMPLE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = tempfile.mkdtemp(prefix="gldfa_cli_")
atexit.register(shutil.rmtree, ROOT, True)

# The real CUHK03 sample when present; otherwise the synthetic config generates a world in the temporary root
# (never into ../shared, where it would pose as the real sample to later runs on the same machine).
DATA_ROOT = CUHK03_SAMPLE if os.path.isdir(CUHK03_SAMPLE) else os.path.join(ROOT, "synthetic_world")

# 3 epochs × 4 steps of P×K = 4×2 at 64×32 on ResNet-18/8; a checkpoint every 2 steps (so also mid-epoch).
TINY = [
    "--config",
    os.path.join(REPO, "experiments", "synthetic.py"),
    f"--config.data.root={DATA_ROOT}",
    "--config.data.height=64",
    "--config.data.width=32",
    "--config.data.num_identities=4",
    "--config.data.num_instances=2",
    "--config.model.depth=18",
    "--config.model.width_multiplier=0.125",
    "--config.model.embed_dim=16",
    "--config.model.num_stripes=4",
    "--config.train.epochs=3",
    "--config.train.steps_per_epoch=4",
    "--config.train.eval_every=0",
    "--config.train.checkpoint_every=1",
    "--config.train.checkpoint_every_steps=2",
    "--config.eval.batch_size=64",
]

# Every CLI run of the tests forbids implicit host<->device transfers, as big_vision runs: a stray float(x) or
# numpy argument in the loop would stall an accelerator every step.
ENV = {
    **os.environ,
    "JAX_TRANSFER_GUARD": "disallow",
    "JAX_COMPILATION_CACHE_DIR": os.path.join(ROOT, "jax_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def command(*args) -> list:
    return [sys.executable, "-m", "gldfa_jax.main", *args]


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def popen_cli(*args, log_path: str, env: dict | None = None) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(command(*args), cwd=REPO, env=env or ENV, stdout=log, stderr=subprocess.STDOUT)


def new_workdir(name: str) -> str:
    return os.path.join(ROOT, name)


@functools.cache
def trained_workdir() -> tuple:
    """(workdir, CompletedProcess) of one uninterrupted tiny training run."""
    workdir = new_workdir("trained")
    proc = run_cli(*TINY, "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc
