"""Ablation runner: the paper's Table 2, Fig. 6 (k and W sweeps) and Table 3 as sets of config variants.

  python -m experiments.ablation --set table2 --base experiments/synthetic.py --workdir runs/ablation \
      --seeds 0,1,2 [--rows "GL+LSA,GLDFA-Net"] [--config.train.epochs=2 ...]

Each (row, seed) trains with `python -m gldfa_jax.main` in its own folder <workdir>/<set>/<row>/seed<S>/;
a row is finished when that folder's `row.json` exists (written after the trainer exits cleanly), so an
interrupted run continues where it stopped and the trainer itself resumes an interrupted row from its last
checkpoint. The markdown table (<workdir>/<set>/<set>.md) shows mean ± std over the seeds run so far beside
the paper's numbers, which are marked as not comparable when the dataset differs.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

import experiments

EXPERIMENTS_DIR = os.path.dirname(os.path.abspath(__file__))
METRICS = (("mAP", "mAP"), ("rank1", "R-1"), ("rank5", "R-5"), ("rank10", "R-10"))
ROW_FILE = "row.json"
RESULTS_FILE = "results.json"  # what gldfa_jax.main writes into its workdir


@dataclass(frozen=True)
class Row:
    """One line of a paper table: config switches, the distance mode whose numbers it reports, the paper's numbers."""
    name: str
    overrides: dict
    mode: str
    paper: dict = field(default_factory=dict)  # {dataset key: {"mAP", "rank1", ...}} in percent


@dataclass(frozen=True)
class AblationSet:
    title: str
    rows: tuple
    paper_dataset: dict  # dataset key -> the dataset's name in the paper
    default_bases: tuple = ()  # configs used when --base is not given
    x_label: str = ""  # for the sweeps: plotted against this field of the rows
    x_values: tuple = ()
    modes: tuple = ()  # non-empty: the table shows the mAP of each of these modes and the feature statistics


def _paper(dataset, mAP, r1, r5=None, r10=None):
    numbers = {"mAP": mAP, "rank1": r1, "rank5": r5, "rank10": r10}
    return {dataset: {k: v for k, v in numbers.items() if v is not None}}


# Table 2 (Market-1501). Rows are the paper's; their mapping to config switches is ours:
#  - the ResNet rows are a plain backbone: global branch only, no 1×1 reduction (model.embed_dim = 0); the
#    "ResNet50" rows keep the config's depth (50 in the paper's configs, 18 in synthetic.py), "ResNet101"
#    sets 101;
#  - "TH" is the paper's triplehard loss = loss.triplet "soft" (eqs. 7-8), applied to the Euclidean global
#    distance and to the local distance (LSA when loss.use_lsa, else stripe-by-stripe);
#  - the G/L/GL(+LSA) rows use "ID loss + triplehard" only (§4.2), so no centre loss; the GLDFA-Net rows
#    add the centre loss (eq. 12);
#  - without LSA the local distance is hard alignment in training AND at test time (loss.window = 1, which
#    evaluation reads too), since the paper credits LSA in both phases.
_NO_CENTER = {"loss.center_weight": 0.0}
_NO_LSA = {"loss.use_lsa": False, "loss.window": 1}
_RESNET = {"model.branches": "global", "model.embed_dim": 0, "loss.triplet": "none", **_NO_CENTER}
TABLE2 = AblationSet(
    title="Table 2: ablation of GLDFA-Net's components",
    paper_dataset={"market": "Market-1501"},
    rows=(
        Row("ResNet50", dict(_RESNET), "global", _paper("market", 70.6, 83.7, 92.8, 96.3)),
        Row("ResNet101", {**_RESNET, "model.depth": 101}, "global", _paper("market", 73.4, 85.3, 93.0, 97.2)),
        Row("ResNet50+TH", {**_RESNET, "loss.triplet": "soft"}, "global",
            _paper("market", 73.8, 86.8, 93.2, 97.4)),
        Row("G(Global+TH)", {"model.branches": "global", **_NO_CENTER}, "global",
            _paper("market", 77.6, 89.7, 93.4, 97.5)),
        Row("L(Local+TH)", {"model.branches": "local", **_NO_LSA, **_NO_CENTER}, "lsa",
            _paper("market", 78.9, 90.1, 94.0, 97.9)),
        Row("GL(Global-Local+TH)", {"model.branches": "global_local", **_NO_LSA, **_NO_CENTER}, "global+lsa",
            _paper("market", 80.5, 90.4, 94.6, 98.0)),
        Row("L+LSA", {"model.branches": "local", "loss.use_lsa": True, **_NO_CENTER}, "lsa",
            _paper("market", 80.7, 92.3, 95.3, 98.2)),
        Row("GL+LSA", {"model.branches": "global_local", "loss.use_lsa": True, **_NO_CENTER}, "global+lsa",
            _paper("market", 81.6, 92.8, 95.6, 98.2)),
        Row("GLDFA-Net w/o TH", {"loss.triplet": "none"}, "global+lsa", _paper("market", 82.7, 91.9, 94.3, 97.4)),
        Row("GLDFA-Net w/o LSA", dict(_NO_LSA), "global+lsa", _paper("market", 84.2, 92.6, 95.0, 97.8)),
        Row("GLDFA-Net", {}, "global+lsa", _paper("market", 86.1, 94.8, 97.2, 98.4)),
    ),
)

# Fig. 6 (Market-1501): the paper only plots these, it prints no numbers, so there is no paper column.
FIG6_K = AblationSet(
    title="Fig. 6(a): number of stripes k (W = k/2)",
    paper_dataset={},
    rows=tuple(Row(f"k={k}", {"model.num_stripes": k, "loss.window": 0}, "global+lsa") for k in (1, 2, 4, 6, 8, 10)),
    x_label="number of stripes k", x_values=(1, 2, 4, 6, 8, 10),
)
FIG6_W = AblationSet(
    title="Fig. 6(b): sliding window W (k = 8; W = 1 is hard alignment)",
    paper_dataset={},
    rows=tuple(Row(f"W={w}", {"model.num_stripes": 8, "loss.window": w}, "global+lsa") for w in (1, 2, 4, 6, 8)),
    x_label="sliding window W", x_values=(1, 2, 4, 6, 8),
)

# Table 3: partial re-ID. The paper prints mAP and Rank-1 only; the other methods of the table are not ours.
TABLE3 = AblationSet(
    title="Table 3: partial person re-ID",
    paper_dataset={"partial_market": "Partial-Market", "partial_duke": "Partial-Duke"},
    rows=(
        Row("ResNet50", dict(_RESNET), "global",
            {**_paper("partial_market", 42.8, 60.5), **_paper("partial_duke", 39.7, 52.3)}),
        Row("GLDFA-Net", {}, "global+lsa",
            {**_paper("partial_market", 54.6, 72.4), **_paper("partial_duke", 48.2, 60.9)}),
    ),
    default_bases=("experiments/partial_market.py", "experiments/partial_duke.py"),
)

# Issue 9: does the local branch earn its place on real crops? One change per row against the paper's recipe;
# every row reports global, lsa and global+lsa, with the stripe-feature norm and the LSA pos/neg ratio.
LOCAL_BRANCH = AblationSet(
    title="Local branch on real crops: one change at a time",
    paper_dataset={},
    rows=(
        Row("GLDFA-Net (paper recipe)", {}, "global+lsa"),
        Row("w/o LSA (W=1)", dict(_NO_LSA), "global+lsa"),
        Row("ID loss only", {"loss.triplet": "none", **_NO_CENTER}, "global+lsa"),
        Row("local: no ReLU", {"model.local_relu": False}, "global+lsa"),
        Row("local: batch-hard triplet", {"loss.local_triplet": "hard"}, "global+lsa"),
        Row("batch-hard triplet (both)", {"loss.triplet": "hard"}, "global+lsa"),
        Row("local: AlignedReID stripe norm", {"loss.normalize_stripes": True}, "global+lsa"),
        Row("centre loss on global only", {"loss.center_branches": ("global",)}, "global+lsa"),
        Row("one triplet on global + LSA", {"loss.triplet_distance": "sum"}, "global+lsa"),
    ),
    default_bases=("experiments/cuhk03_real.py",),
    modes=("global", "lsa", "global+lsa"),
)

SETS = {"table2": TABLE2, "fig6_k": FIG6_K, "fig6_w": FIG6_W, "table3": TABLE3, "local_branch": LOCAL_BRANCH}
STATS_FILE = os.path.join("reports", "feature_stats.json")  # gldfa_jax.reports, in the trainer's workdir


# ---------------------------------------------------------------- configs and overrides

def available_configs() -> list[str]:
    return [os.path.join("experiments", name) for name in experiments.available_configs()]


def resolve_config(path: str) -> str:
    """An existing config file path, or ValueError listing the available configs and the closest names."""
    candidates = [path, os.path.join(EXPERIMENTS_DIR, os.path.basename(path))]
    if not path.endswith(".py"):
        candidates.append(os.path.join(EXPERIMENTS_DIR, os.path.basename(path) + ".py"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    available = available_configs()
    close = difflib.get_close_matches(os.path.basename(path), [os.path.basename(a) for a in available], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"config {path!r} does not exist.{hint} Available configs: {', '.join(available)}.")


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("_ablation_base_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def check_overrides(config, keys) -> None:
    """ValueError naming an override key that the config does not have, with close matches."""
    flat = _flat_keys(config)
    for key in keys:
        if key not in flat:
            close = difflib.get_close_matches(key, flat, n=3)
            raise ValueError(f"--config.{key}: the config has no field {key!r}."
                             + (f" Close matches: {', '.join(close)}." if close else ""))


def _flat_keys(config, prefix="") -> list[str]:
    keys = []
    for name, value in config.items():
        full = prefix + name
        if hasattr(value, "items"):
            keys.extend(_flat_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def override_flags(overrides: dict) -> list[str]:
    return [f"--config.{key}={value}" for key, value in overrides.items()]


def dataset_key(base: str) -> str:
    return os.path.splitext(os.path.basename(base))[0]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


# ---------------------------------------------------------------- running

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


def run_set(set_name: str, bases: list[str], workdir: str, seeds: list[int], extra_flags: list[str] = (),
            rows: Optional[list[str]] = None, trainer: Callable = subprocess_trainer, verbose: bool = False) -> str:
    """Run every unfinished (base, row, seed) of the set, then write and return the markdown table path."""
    spec = SETS[set_name]
    selected = select_rows(spec, rows)
    jobs = [(b, r, s) for b in bases for r in selected for s in seeds]
    todo = [j for j in jobs if not os.path.exists(os.path.join(run_dir(workdir, set_name, j[0], j[1], j[2],
                                                                        len(bases) > 1), ROW_FILE))]
    print(f"{spec.title}: {len(jobs)} runs, {len(jobs) - len(todo)} already finished, {len(todo)} to do.")
    bar = tqdm(todo, desc=set_name, unit="run")
    for base, row, seed in bar:
        bar.set_postfix_str(f"{row.name} seed {seed}")
        out = run_dir(workdir, set_name, base, row, seed, len(bases) > 1)
        if os.path.exists(os.path.join(out, ROW_FILE)) or not claim(out):
            continue  # finished or running in another runner process sharing this workdir
        train_dir = os.path.join(out, "train")
        os.makedirs(train_dir, exist_ok=True)
        flags = override_flags(row.overrides) + [f"--config.seed={seed}"] + list(extra_flags)
        start = time.time()
        trainer(base, train_dir, flags, os.path.join(out, "train.log"), verbose=verbose)
        with open(os.path.join(train_dir, RESULTS_FILE)) as f:
            results = json.load(f)
        if row.mode not in results:
            raise RuntimeError(f"{row.name}: the trainer's results have no mode {row.mode!r} "
                               f"(got {sorted(results)}); check eval.modes in {base}")
        record = {"set": set_name, "row": row.name, "base": base, "seed": seed, "mode": row.mode,
                  "command": " ".join(["python -m gldfa_jax.main", "--config", base, "--workdir", train_dir, *flags]),
                  "wall_s": round(time.time() - start, 1), "results": results}
        with open(os.path.join(out, ROW_FILE), "w") as f:
            json.dump(record, f, indent=2)
        _remove(os.path.join(out, ".claim"))
    bar.close()
    return write_table(set_name, bases, workdir)


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


def config_fingerprint(train_dir: str, spec: AblationSet) -> Optional[str]:
    """Hash of the config the trainer ran (its checkpoints/config.json) without the seed and the set's row
    switches: the same for every run of a set unless the base config or the overrides changed in between.
    Fields added to experiments/base.py since a run count at their default, which by convention keeps the
    old behaviour."""
    from gldfa_jax import checkpointing
    from gldfa_jax.retrieve import with_defaults

    saved = checkpointing.read_config_json(os.path.join(train_dir, checkpointing.LATEST_DIR))
    if saved is None:
        return None
    config = with_defaults(saved).to_dict()
    config.pop("seed", None)
    for key in {k for r in spec.rows for k in r.overrides}:
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def select_rows(spec: AblationSet, names: Optional[list[str]]) -> list[Row]:
    if not names:
        return list(spec.rows)
    by_name = {r.name: r for r in spec.rows}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"--rows {unknown} not in this set; its rows are: {', '.join(by_name)}")
    return [by_name[n] for n in names]


# ---------------------------------------------------------------- the table

def collect(set_name: str, base: str, row: Row, workdir: str, multi_base: bool) -> list[dict]:
    """row.json records of every seed of this row finished so far."""
    parent = os.path.dirname(run_dir(workdir, set_name, base, row, 0, multi_base))
    records = []
    if os.path.isdir(parent):
        for entry in sorted(os.listdir(parent)):
            path = os.path.join(parent, entry, ROW_FILE)
            if entry.startswith("seed") and os.path.exists(path):
                with open(path) as f:
                    records.append(json.load(f))
    return sorted(records, key=lambda r: r["seed"])


def mean_std(values) -> str:
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def summarize(records: list[dict], mode: str) -> dict:
    """{"mAP": "x ± s", ...} over the seeds, sample std (ddof 1)."""
    return {key: mean_std([r["results"][mode][key] for r in records]) for key, _ in METRICS}


def paper_columns(spec: AblationSet, rows: list[Row], key: str) -> list[tuple[str, str, str]]:
    """(paper dataset key, metric key, column label) of the paper's numbers to show beside a run on `key`."""
    comparable = key in spec.paper_dataset
    columns = []
    for pk in ([key] if comparable else list(spec.paper_dataset)):
        label = f"paper {spec.paper_dataset[pk]}" + ("" if comparable else " (not comparable)")
        columns += [(pk, m, f"{label} {name}") for m, name in METRICS if any(m in r.paper.get(pk, {}) for r in rows)]
    return columns


def write_table(set_name: str, bases: list[str], workdir: str) -> str:
    """Write <workdir>/<set>/<set>.md (and, for the sweeps, a plot per config) from the finished runs;
    every row of the set is listed, those without finished runs as "not yet run"."""
    spec = SETS[set_name]
    rows = list(spec.rows)
    multi = len(bases) > 1
    lines = [f"## {spec.title}", ""]
    total_s = 0.0
    for base in bases:
        key = dataset_key(base)
        paper = paper_columns(spec, rows, key)
        note = ("" if key in spec.paper_dataset or not paper else
                " — the paper's numbers are for another dataset: shown for reference, not comparable.")
        head = (["Methods"] + ([f"{m} mAP" for m in spec.modes] + ["stripe norm", "LSA pos/neg", "global pos/neg"]
                               if spec.modes else [name for _, name in METRICS])
                + ["seeds", "distance"] + [c[2] for c in paper])
        lines += [f"Config: `{base}`{note}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        curve, fingerprints = [], {}
        for row in rows:
            records = collect(set_name, base, row, workdir, multi)
            for r in records:
                run = run_dir(workdir, set_name, base, row, r["seed"], multi)
                fingerprint = config_fingerprint(os.path.join(run, "train"), spec)
                if fingerprint:
                    fingerprints.setdefault(fingerprint, []).append(f"{row.name} seed {r['seed']}")
            if records and spec.modes:
                ours = ([mean_std([r["results"][m]["mAP"] for r in records]) for m in spec.modes]
                        + feature_stat_cells(records, workdir, set_name, base, row, multi)
                        + [",".join(str(r["seed"]) for r in records)])
                total_s += sum(r["wall_s"] for r in records)
                curve.append([np.nan, np.nan])
            elif records:
                ours = list(summarize(records, row.mode).values()) + [",".join(str(r["seed"]) for r in records)]
                total_s += sum(r["wall_s"] for r in records)
                curve.append([np.mean([r["results"][row.mode][m] for r in records]) for m in ("mAP", "rank1")])
            else:
                ours = ["not yet run"] * (len(spec.modes) + 3 if spec.modes else len(METRICS)) + ["—"]
                curve.append([np.nan, np.nan])
            cells = [row.name] + ours + [row.mode] + [_fmt(row.paper.get(pk, {}).get(m)) for pk, m, _ in paper]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if len(fingerprints) > 1:
            groups = "; ".join(f"{fp}: {', '.join(runs)}" for fp, runs in fingerprints.items())
            lines += [f"**Warning: these runs used different base configs** (the config or the overrides changed "
                      f"between runs; fingerprints {groups}). Rerun them in a fresh --workdir.", ""]
        if spec.x_values:
            from gldfa_jax import reports
            curve = np.asarray(curve)
            reports.parameter_curve(spec.x_values, {"mAP": curve[:, 0], "Rank-1": curve[:, 1]},
                                    os.path.join(workdir, set_name, f"{set_name}_{key}.png"),
                                    x_label=spec.x_label, title=spec.title)
    lines += ["mAP and R-k in percent, mean ± sample std over the seeds listed (one value: one seed); "
              "'distance' is the evaluation mode reported. Config switches per row: "
              f"`python -m experiments.ablation --set {set_name} --list`; each seed's exact command and wall time "
              f"are in its row.json. Wall time of the finished runs: {total_s / 60:.1f} min in total.", ""]
    out = os.path.join(workdir, set_name, f"{set_name}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return out


def feature_stat_cells(records: list[dict], workdir: str, set_name: str, base: str, row: Row,
                       multi: bool) -> list[str]:
    """Mean stripe norm, LSA and global pos/neg distance ratios (gldfa_jax.evaluation.separation) over seeds."""
    stats = []
    for r in records:
        path = os.path.join(run_dir(workdir, set_name, base, row, r["seed"], multi), "train", STATS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                stats.append(json.load(f))
    cells = []
    for get in (lambda s: s["stripe_norm"], lambda s: s["lsa"]["ratio"], lambda s: s["global"]["ratio"]):
        try:
            values = [get(s) for s in stats]
        except KeyError:
            values = []
        cells.append(f"{np.mean(values):.2f}" if values else "—")
    return cells


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.1f}"


def describe(set_name: str) -> str:
    spec = SETS[set_name]
    lines = [spec.title]
    for row in spec.rows:
        switches = " ".join(override_flags(row.overrides)) or "(the config as is)"
        lines.append(f"  {row.name:<22} distance {row.mode:<11} {switches}")
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.ablation", description=__doc__.split("\n\n")[0],
                                     epilog="Any --config.FIELD=VALUE is passed on to every run.")
    parser.add_argument("--set", required=True, help=f"one of {', '.join(SETS)}")
    parser.add_argument("--base", action="append",
                        help="config file (repeatable); default experiments/synthetic.py (table3: the partial configs)")
    parser.add_argument("--workdir", default="runs/ablation")
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--rows", default="", help="comma-separated row names (default: all rows of the set)")
    parser.add_argument("--list", action="store_true", help="print the rows and their config switches, run nothing")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table from finished runs")
    parser.add_argument("--verbose", action="store_true", help="show the trainer's output instead of logging it")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognised arguments {unknown}; only --config.FIELD=VALUE overrides are passed on")
    if args.set not in SETS:
        parser.error(f"--set {args.set!r} is not a known set; choose one of {', '.join(SETS)}")
    return args, rest


def main(argv=None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print(describe(args.set))
        return 0
    spec = SETS[args.set]
    try:
        bases = [resolve_config(b) for b in (args.base or list(spec.default_bases) or ["experiments/synthetic.py"])]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
        select_rows(spec, rows)
        for base in bases:
            config = load_config(base)
            check_overrides(config, [a[len("--config."):].split("=", 1)[0] for a in extra])
            check_overrides(config, {k for r in spec.rows for k in r.overrides})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.table_only:
        path = write_table(args.set, bases, args.workdir)
    else:
        try:
            path = run_set(args.set, bases, args.workdir, seeds, extra, rows, verbose=args.verbose)
        except RuntimeError as e:
            print(f"error: {e}\nRerun the same command to continue; finished runs are kept.", file=sys.stderr)
            return 1
    with open(path) as f:
        print(f.read())
    print(f"Table written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
