"""Runs every unfinished (config, row, seed) of an ablation set with `python -m gldfa_jax.main`.

Each run trains in <workdir>/<set>/<row>/seed<S>/train; a run is finished when its `row.json` exists (written
after the trainer exits cleanly), so an interrupted set continues where it stopped and the trainer resumes an
interrupted run from its last checkpoint. Several runner processes may share one workdir (`claim`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

from gldfa_jax import checkpointing
from gldfa_jax import config as defaults
from gldfa_jax.ablation.sets import SETS, AblationSet, Row, override_flags, select_rows

ROW_FILE = "row.json"
RESULTS_FILE = "results.json"  # what gldfa_jax.main writes into its workdir
CONFIG_DIR = "experiments"


def available_configs(folder: str = CONFIG_DIR) -> list[str]:
    return [os.path.join(folder, name) for name in defaults.available_configs(folder)]


def resolve_config(path: str) -> str:
    """An existing config file path, or ValueError listing the available configs and the closest names."""
    candidates = [path, os.path.join(CONFIG_DIR, os.path.basename(path))]
    if not path.endswith(".py"):
        candidates.append(os.path.join(CONFIG_DIR, os.path.basename(path) + ".py"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    available = available_configs()
    close = difflib.get_close_matches(os.path.basename(path), [os.path.basename(a) for a in available], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"config {path!r} does not exist.{hint} Available configs: {', '.join(available)}.")


def check_config(path: str, overrides: list[str]) -> None:
    """Load the config with the `--config.FIELD=VALUE` overrides as the trainer will (config_flags), so an
    unknown field or a value of the wrong type fails here, before any run starts, with a ValueError."""
    argv = ["ablation", f"--config={path}", *overrides]
    holder = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=holder, sys_argv=argv)
    try:
        holder(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} with {' '.join(overrides)}: {defaults.override_error_message(e)}") from None


def dataset_key(base: str) -> str:
    return os.path.splitext(os.path.basename(base))[0]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def subprocess_trainer(base: str, workdir: str, flags: list[str], log_path: str, verbose: bool = False) -> None:
    """Train and evaluate one variant with `python -m gldfa_jax.main`; its output goes to `log_path`."""
    command = [sys.executable, "-m", "gldfa_jax.main", "--config", base, "--workdir", workdir, *flags]
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        out = None if verbose else log
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT if out else None).returncode
    if code != 0:
        raise RuntimeError(f"trainer exited with status {code}; see {log_path}")


def run_dir(workdir: str, set_name: str, base: str, row: Row, seed: int, multi_base: bool) -> str:
    parts = [workdir, set_name] + ([dataset_key(base)] if multi_base else []) + [slug(row.name), f"seed{seed}"]
    return os.path.join(*parts)


def run_set(
    set_name: str,
    bases: list[str],
    workdir: str,
    seeds: list[int],
    extra_flags: list[str] = (),
    rows: list[str] | None = None,
    trainer: Callable = subprocess_trainer,
    verbose: bool = False,
) -> None:
    """Run every unfinished (base, row, seed) of the set."""
    spec = SETS[set_name]
    selected = select_rows(spec, rows)
    jobs = [(b, r, s) for b in bases for r in selected for s in seeds]
    todo = [
        j
        for j in jobs
        if not os.path.exists(os.path.join(run_dir(workdir, set_name, j[0], j[1], j[2], len(bases) > 1), ROW_FILE))
    ]
    print(f"{spec.title}: {len(jobs)} runs, {len(jobs) - len(todo)} already finished, {len(todo)} to do.")
    bar = tqdm(todo, desc=set_name, unit="run")
    for base, row, seed in bar:
        bar.set_postfix_str(f"{row.name} seed {seed}")
        out = run_dir(workdir, set_name, base, row, seed, len(bases) > 1)
        if os.path.exists(os.path.join(out, ROW_FILE)) or not claim(out):
            continue  # finished or running in another runner process sharing this workdir
        train_dir = os.path.join(out, "train")
        os.makedirs(train_dir, exist_ok=True)
        # The row's switches come last: a flag given to every run (a weights path, a size) must not undo the
        # variant a row stands for (the from-scratch row sets model.pretrained="").
        flags = list(extra_flags) + [f"--config.seed={seed}"] + override_flags(row.overrides)
        start = time.time()
        trainer(base, train_dir, flags, os.path.join(out, "train.log"), verbose=verbose)
        with open(os.path.join(train_dir, RESULTS_FILE)) as f:
            results = json.load(f)
        if row.mode not in results:
            raise RuntimeError(
                f"{row.name}: the trainer's results have no mode {row.mode!r} "
                f"(got {sorted(results)}); check eval.modes in {base}"
            )
        record = {
            "set": set_name,
            "row": row.name,
            "base": base,
            "seed": seed,
            "mode": row.mode,
            "command": " ".join(["python -m gldfa_jax.main", "--config", base, "--workdir", train_dir, *flags]),
            "wall_s": round(time.time() - start, 1),
            "results": results,
        }
        with open(os.path.join(out, ROW_FILE), "w") as f:
            json.dump(record, f, indent=2)
        _remove(os.path.join(out, ".claim"))
    bar.close()


def claim(out: str) -> bool:
    """Mark a run as taken by this process (<out>/.claim holds its pid), so that several runner processes can
    share one workdir (on a 2-core machine two runners finish a set sooner than one). False when a live
    process holds it; a claim left by a dead process is taken over."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, ".claim")
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    text = f.read()
                if not text:
                    return False  # its owner is writing its pid right now
                pid = int(text)
                os.kill(pid, 0)
                return pid == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                _remove(path)  # stale: its process is gone
                continue
            except PermissionError:  # alive, owned by another user
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def config_fingerprint(train_dir: str, spec: AblationSet) -> str | None:
    """Hash of the config the trainer ran (its checkpoints/config.json) without the seed and the set's row
    switches: the same for every run of a set unless the base config or the overrides changed in between.
    Fields added to gldfa_jax/config.py since a run count at their default, which by convention keeps the
    old behaviour."""
    saved = checkpointing.read_config_json(os.path.join(train_dir, checkpointing.LATEST_DIR))
    if saved is None:
        return None
    config = defaults.with_defaults(saved).to_dict()
    config.pop("seed", None)
    for key in {k for r in spec.rows for k in r.overrides}:
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
