"""Issue 19 at the paper's resolution, on one GPU: does the local branch help when training starts from ImageNet
weights? One prepared script for a device lease; not yet run on a GPU (docs/benchmarks.md has the exact call).

    python -m benchmarks.pack_crops --src ../shared/data/cuhk03_real --out data/cuhk03_real_packed   # once, here
    python -m benchmarks.imagenet_study --data data/cuhk03_real_packed \
        --weights weights/mobilenet_v2.safetensors --out $OUT [--smoke] [--budget-s S] [--deadline-s S] \
        [--seeds 0,1,2] [--sizes 384x128,256x128] [--epochs E] [--start-at I] [--workdir DIR]

Every run is `python -m gldfa_jax.main --config experiments/cuhk03_real_imagenet.py` (the CPU study's config,
MobileNetV2 with torchvision's ImageNet weights) at a size of --sizes, with --config.model.dtype=auto (bfloat16 on
H100/H200), or the PyTorch reference (benchmarks.torch_reference) on the same config. Rows, in priority order:

    ImageNet init (recipe)                     MobileNetV2 from the ImageNet weights, both branches
    ResNet-50 from scratch (same schedule)     the paper's backbone without ImageNet weights (none can be fetched)
    ImageNet init: global branch only          --config.model.branches=global, the local branch's contrast
    PyTorch reference: ImageNet init (recipe)  the recipe in hand-written PyTorch (torch 2.11 on the GPU machine)

Runs go in priority order: every row at the first size with the first seed, then the other seeds, then the next
size. A run starts only when the seconds spent plus the run's expected wall time (its row's earlier seed, else the
longest run so far) fit --budget-s (and --deadline-s); the others are skipped, never cut. --deadline-s is the last
resort below the device tool's timeout: a run still going then is stopped and recorded as cut. A run that fails
(the reference's pretrained loading, say) records the end of its log and the study goes on. OUT/imagenet_study.json and
OUT/imagenet_study.md are rewritten after every run: one row per (size, row, seed) with the mAP of global, lsa and
global+lsa, the rank-1 of global+lsa, the wall time and the steady training img/s; then mean ± sample std per
(size, row).

Epochs scaled to the data. The paper trains 300 epochs on Market-1501's 12,936 crops (3.9 M crops seen); the strong
baseline fine-tunes from ImageNet for 120 epochs. The CPU study runs 15 short epochs of 40 steps (600 P×K steps,
19,200 crops, 3.6 passes over the 5,300; experiments/cuhk03_real_imagenet.py). Here the epoch is the P×K sampler's
own (--config.train.steps_per_epoch=0: 134 steps of 32 crops over the 5,300 crops of 543 identities) and the CPU
schedule keeps its shape at E epochs (`schedule`: warm-up and decays at the config's fractions of training). E=20
(2,680 steps, 85,760 crops, 16 passes, 4.5× the CPU run's steps) is what fits the lease below.

Time per run, an ESTIMATE until measured (the md reports each run's wall time and steady img/s; choose --epochs from
them): one H100 ran the ResNet-50 GLDFA step at 384×128, batch 32, bfloat16 at 14.0 ms with 47.5 s of compile and
first step (docs/benchmarks.md, device check). Estimate for a ResNet-50 run at E=20: ~10 s start-up and CUDA, ~5 s
to decode 6,238 crops on 16 threads, ~50 s train-step compile, ~20 s evaluation compile, 2,680 × 14 ms = 38 s of
training, ~5 s evaluation with re-ranking and checkpoints: ~130 s. MobileNetV2 (unmeasured on a GPU), guessed at
~100 s; 256×128 at about 2/3 of the step time. Later seeds of a (size, row) may skip most compiles through JAX's
persistent compilation cache (WORKDIR/jax_cache), if the seed does not enter the compiled program. With 15 minutes of
device time per session and a machine start of 1-2 minutes, --budget-s 240 under a 300 s timeout leaves room for a
second call: about two runs (the recipe and ResNet-50 at 384×128, seed 0) per call; the whole plan (2 sizes × 3
seeds × 4 rows, ~24 × 2 min) takes several leases, continued with --start-at (the plan's index, printed first).

--smoke runs the same code paths tiny on a CPU (64×32, 1 epoch of 2 steps, ResNet-18 ×0.125 for the ResNet row,
MobileNetV2 unchanged, no re-ranking, one seed, all four rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CONFIG = "experiments/cuhk03_real_imagenet.py"
RESULTS_FILE = "results.json"  # what gldfa_jax.main and benchmarks.torch_reference write per run
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "torch", "torchvision")
# The table's columns: (heading, results mode, metric); a mode a row does not evaluate shows as "—".
COLUMNS = (
    ("global mAP", "global", "mAP"),
    ("lsa mAP", "lsa", "mAP"),
    ("global+lsa mAP", "global+lsa", "mAP"),
    ("global+lsa R-1", "global+lsa", "rank1"),
)


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    kind: str  # "jax": gldfa_jax.main; "torch": benchmarks.torch_reference
    flags: tuple = ()  # --config.FIELD=VALUE after the common ones, so a row's switch wins
    resnet: bool = False  # --smoke shrinks a ResNet-50 to ResNet-18 ×0.125


ROWS = (
    Row("ImageNet init (recipe)", "jax"),
    Row(
        "ResNet-50 from scratch (same schedule)",
        "jax",
        ("--config.model.backbone=resnet", "--config.model.depth=50", "--config.model.pretrained="),
        resnet=True,
    ),
    Row("ImageNet init: global branch only", "jax", ("--config.model.branches=global",)),
    Row("PyTorch reference: ImageNet init (recipe)", "torch"),
)


@dataclasses.dataclass(frozen=True)
class Run:
    size: tuple  # (height, width)
    row: Row
    seed: int

    @property
    def size_name(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"


@dataclasses.dataclass(frozen=True)
class Settings:
    data: str
    weights: str
    epochs: int
    steps_per_epoch: int  # 0: the P×K sampler's epoch
    smoke: bool = False
    config: str = CONFIG


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part.lower())
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise ValueError(f"--sizes={text!r}: {part!r} is not HEIGHTxWIDTH; use e.g. --sizes=384x128,256x128.")
        sizes.append((int(match[1]), int(match[2])))
    return sizes


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--seeds={text!r} is not a comma-separated list of integers; use e.g. --seeds=0,1,2."
        ) from None


def plan(sizes, seeds, rows=ROWS) -> list[Run]:
    """Priority order: each size in turn; within it the first seed of every row, then the next seed."""
    return [Run(size, row, seed) for size in sizes for seed in seeds for row in rows]


def schedule(epochs: int, config: str = CONFIG) -> tuple[int, tuple]:
    """(warm-up epochs, decay epochs): the CPU recipe's schedule (`config`) at the same fractions of `epochs`."""
    spec = importlib.util.spec_from_file_location("study_config", config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    o, total = module.get_config().optim, module.get_config().train.epochs
    warmup = round(epochs * o.warmup_epochs / total)
    decays = tuple(sorted({d for d in (round(epochs * e / total) for e in o.decay_epochs) if 0 < d < epochs}))
    return warmup, decays


def config_flags(run: Run, s: Settings) -> list[str]:
    """The run's --config.FIELD=VALUE overrides: the common ones, the row's, then --smoke's shrinking."""
    warmup, decays = schedule(s.epochs)
    flags = [
        f"--config.seed={run.seed}",
        f"--config.data.root={s.data}",
        f"--config.data.height={run.size[0]}",
        f"--config.data.width={run.size[1]}",
        "--config.model.dtype=auto",
        f"--config.model.pretrained={s.weights}",
        f"--config.train.steps_per_epoch={s.steps_per_epoch}",
        f"--config.train.epochs={s.epochs}",
        f"--config.optim.warmup_epochs={warmup}",
        f"--config.optim.decay_epochs={decays}",
        f"--config.train.eval_every={s.epochs}",  # evaluate once, at the end
        f"--config.train.checkpoint_every={s.epochs}",
        *run.row.flags,
    ]
    if s.smoke:
        flags.append("--config.eval.rerank=False")
        if run.row.resnet:
            flags += ["--config.model.depth=18", "--config.model.width_multiplier=0.125"]
    return flags


def run_dir(workdir: str, run: Run) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", run.row.name).strip("_").lower()
    return os.path.join(workdir, run.size_name, slug, f"seed{run.seed}")


def command(run: Run, s: Settings, out_dir: str) -> list[str]:
    if run.row.kind == "torch":  # it writes WORKDIR/seed<S>/results.json itself
        parent = os.path.dirname(out_dir)
        head = ["-m", "benchmarks.torch_reference", "--config", s.config, "--workdir", parent, "--seeds"]
        return [sys.executable, *head, str(run.seed), *config_flags(run, s)]
    return [sys.executable, "-m", "gldfa_jax.main", "--config", s.config, "--workdir", out_dir, *config_flags(run, s)]


def child_env(run: Run, workdir: str) -> dict:
    env = dict(os.environ)
    if run.row.kind == "torch":
        # The reference's JAX parts (augmentation, evaluation) are small: on the CPU they leave the GPU to torch,
        # which JAX's default preallocation of 75 % of device memory would otherwise starve.
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(workdir, "jax_cache"))
    return env


def scores(results: dict) -> dict:
    """The table's numbers from one results.json; None where the run has no such mode."""
    return {h: results.get(mode, {}).get(metric) for h, mode, metric in COLUMNS}


def steady_images_per_s(metrics_path: str) -> float | None:
    """Median training img/s over the logged windows after the first (which holds the compile)."""
    if not os.path.exists(metrics_path):
        return None
    with open(metrics_path) as f:
        rates = [r["images_per_s"] for r in map(json.loads, f) if r.get("split") == "train" and "images_per_s" in r]
    rates = rates[1:] or rates
    return round(statistics.median(rates), 1) if rates else None


def log_tail(path: str, chars: int = 2000) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def expected_wall(run: Run, records: list[dict]) -> float:
    """Seconds the run should take: its (size, row)'s earlier seeds, else the longest run so far, else 0."""
    timed = [r for r in records if r.get("wall_s") is not None and r["status"] in ("ok", "failed")]
    same = [r["wall_s"] for r in timed if (r["size"], r["row"]) == (run.size_name, run.row.name)]
    if same:
        return statistics.mean(same)
    return max((r["wall_s"] for r in timed), default=0.0)


def execute(run: Run, s: Settings, workdir: str, timeout: float | None) -> dict:
    """Train and evaluate one run in a subprocess; its record (never raises for a failed run)."""
    out_dir = run_dir(workdir, run)
    os.makedirs(out_dir, exist_ok=True)
    cmd = command(run, s, out_dir)
    record = {"size": run.size_name, "row": run.row.name, "seed": run.seed, "kind": run.row.kind}
    record["command"] = " ".join(["python", *cmd[1:]])
    results_path = os.path.join(out_dir, RESULTS_FILE)
    if os.path.exists(results_path):  # an earlier call's run in this --workdir
        return {**record, **read_results(results_path, out_dir), "status": "ok", "wall_s": None, "reused": True}
    log_path = os.path.join(out_dir, "run.log")
    start = time.time()
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            code = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(run, workdir), timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    record["wall_s"] = round(time.time() - start, 1)
    if code == 0 and os.path.exists(results_path):
        return {**record, **read_results(results_path, out_dir), "status": "ok"}
    why = "cut at --deadline-s" if code is None else f"exit status {code}"
    return {**record, "status": "cut" if code is None else "failed", "error": why, "log_tail": log_tail(log_path)}


def read_results(results_path: str, out_dir: str) -> dict:
    with open(results_path) as f:
        results = json.load(f)
    return {
        "scores": scores(results),
        "images_per_s": steady_images_per_s(os.path.join(out_dir, "metrics.jsonl")),
        "results": results,
    }


def mean_std(values: list[float]) -> str:
    """'71.3 ± 1.2' (sample std, n - 1) over several values, '71.3' for one, '—' for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def summary(records: list[dict]) -> list[dict]:
    """Mean ± sample std of every column per (size, row) over the finished seeds, in plan order."""
    groups: dict = {}
    for r in records:
        if r["status"] == "ok":
            groups.setdefault((r["size"], r["row"]), []).append(r)
    out = []
    for (size, row), runs in groups.items():
        cells = {h: mean_std([r["scores"][h] for r in runs]) for h, _, _ in COLUMNS}
        out.append({"size": size, "row": row, "seeds": [r["seed"] for r in runs], **cells})
    return out


def _cell(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    heads = [h for h, _, _ in COLUMNS]
    lines = [
        f"# ImageNet study ({'--smoke, CPU' if report['smoke'] else 'GPU'}), {report['created']}",
        "",
        f"{report['environment']['device']}; {report['schedule']}; {report['spent_s']:.0f} s spent"
        + (f" of a {report['budget_s']:.0f} s budget" if report["budget_s"] else "")
        + ".",
        "",
        "| size | row | seed | status | " + " | ".join(heads) + " | wall s | train img/s |",
        "|---" * (len(heads) + 6) + "|",
    ]
    for r in report["records"]:
        values = [_cell(r.get("scores", {}).get(h)) for h in heads]
        status = r["status"] + (f" ({r['error']})" if r.get("error") else "")
        wall, rate = _cell(r.get("wall_s"), 0), _cell(r.get("images_per_s"), 0)
        lines.append(f"| {r['size']} | {r['row']} | {r['seed']} | {status} | " + " | ".join(values))
        lines[-1] += f" | {wall} | {rate} |"
    lines += ["", "Mean ± sample std over the finished seeds (mAP and R-1 in %):", ""]
    lines += ["| size | row | seeds | " + " | ".join(heads) + " |", "|---" * (len(heads) + 3) + "|"]
    for g in report["summary"]:
        seeds = ",".join(map(str, g["seeds"]))
        lines.append(f"| {g['size']} | {g['row']} | {seeds} | " + " | ".join(g[h] for h in heads) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: str, report: dict) -> None:
    """OUT/imagenet_study.json and .md, each replaced whole (a run cut short leaves the last complete pair)."""
    report = {**report, "summary": summary(report["records"])}
    for name, text in (("imagenet_study.json", json.dumps(report, indent=2)), ("imagenet_study.md", markdown(report))):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, name))


def environment() -> dict:
    """Versions and the GPU's name, without importing JAX here: a JAX backend in this process would hold 75 % of
    the device's memory while the runs need it."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    device = f"CPU ({os.cpu_count()} cores)"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        try:
            names = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.split("\n")
            device = ", ".join(n.strip() for n in names if n.strip()) or device
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"device": device, "python": platform.python_version(), "packages": versions}


def check_inputs(args) -> None:
    if not os.path.isdir(os.path.join(args.data, "bounding_box_train")):
        raise ValueError(
            f"--data={args.data!r} has no bounding_box_train/; pack the crops first: python -m "
            f"benchmarks.pack_crops --src ../shared/data/cuhk03_real --out {args.data}"
        )
    if not os.path.isfile(args.weights):
        raise ValueError(
            f"--weights={args.weights!r} is not a file; fetch it here: python -m gldfa_jax.pretrained fetch "
            f"mobilenet_v2 --out weights (then carry weights/ to the device machine)."
        )


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Market-layout crops, e.g. data/cuhk03_real_packed")
    p.add_argument("--weights", required=True, help="MobileNetV2 ImageNet weights (.safetensors)")
    p.add_argument("--out", required=True, help="imagenet_study.json and .md are written here")
    p.add_argument("--workdir", default="", help="run folders (default: a fresh temporary folder)")
    p.add_argument("--smoke", action="store_true", help="the same code paths, tiny, on a CPU")
    p.add_argument("--sizes", default="", help="HEIGHTxWIDTH,... (default 384x128,256x128; --smoke: 64x32)")
    p.add_argument("--seeds", default="", help="comma-separated (default 0,1,2; --smoke: 0)")
    p.add_argument("--epochs", type=int, default=0, help="sampler epochs per run (default 20; --smoke: 1)")
    p.add_argument("--budget-s", type=float, default=0, help="start no run that would end past this (0: none)")
    p.add_argument("--deadline-s", type=float, default=0, help="stop a run still going at this time (0: never)")
    p.add_argument("--start-at", type=int, default=0, help="skip the plan's first I runs (done in an earlier call)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_inputs(args)
        sizes = parse_sizes(args.sizes or ("64x32" if args.smoke else "384x128,256x128"))
        seeds = parse_seeds(args.seeds or ("0" if args.smoke else "0,1,2"))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    epochs = args.epochs or (1 if args.smoke else 20)
    settings = Settings(args.data, args.weights, epochs, 2 if args.smoke else 0, args.smoke)
    workdir = args.workdir or tempfile.mkdtemp(prefix="imagenet_study_")
    os.makedirs(args.out, exist_ok=True)
    runs = plan(sizes, seeds)
    warmup, decays = schedule(epochs)
    steps = "2 steps" if args.smoke else "the P×K sampler's steps"
    report = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "args": vars(args),
        "workdir": workdir,
        "environment": environment(),
        "schedule": f"{epochs} epochs of {steps}, warm-up {warmup}, ×0.1 at {list(decays)}",
        "budget_s": args.budget_s,
        "spent_s": 0.0,
        "plan": [f"{i}: {r.size_name} {r.row.name} seed {r.seed}" for i, r in enumerate(runs)],
        "records": [],
    }
    print(f"{report['environment']['device']}; {report['schedule']}; run folders in {workdir}. Plan:")
    print("\n".join(f"  {line}" for line in report["plan"]), flush=True)
    limits = {"budget": args.budget_s, "deadline": args.deadline_s}
    start = time.time()
    for i, run in enumerate(runs):
        spent = time.time() - start
        label = f"[{i + 1}/{len(runs)}] {run.size_name} {run.row.name} seed {run.seed}"
        expected = expected_wall(run, report["records"])
        why = skip_reason(i, spent, expected, args.start_at, limits)
        if why:
            report["records"].append(
                {"size": run.size_name, "row": run.row.name, "seed": run.seed, "status": f"skipped ({why})"}
            )
            continue
        print(f"{label}: started at {spent:.0f} s (expected ~{expected:.0f} s)", flush=True)
        timeout = max(args.deadline_s - spent, 1.0) if args.deadline_s else None
        record = execute(run, settings, workdir, timeout)
        report["records"].append(record)
        report["spent_s"] = time.time() - start
        write_report(args.out, report)
        print(progress_line(label, record, report, runs[i + 1 :]), flush=True)
        if record["status"] != "ok":
            print(f"  {record['error']}; the end of its log:\n{record['log_tail'][-800:]}", flush=True)
    report["spent_s"] = time.time() - start
    write_report(args.out, report)
    print("\n" + markdown({**report, "summary": summary(report["records"])}))
    print(f"Written: {os.path.join(args.out, 'imagenet_study.md')} and .json")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in report["records"]) else 1


def skip_reason(index: int, spent: float, expected: float, start_at: int, limits: dict) -> str:
    """Why the plan's run `index` is skipped ("" to run it): before --start-at, or expected to end past the budget
    or the deadline (0 = none). Past the deadline a run would only be started to be stopped at once."""
    if index < start_at:
        return "--start-at"
    for name, limit in limits.items():
        if limit and spent + expected > limit:
            return f"{name}: {spent:.0f} s + ~{expected:.0f} s > {limit:.0f} s"
    return ""


def progress_line(label: str, record: dict, report: dict, rest: list) -> str:
    """'[2/24] ...: ok in 131 s, global+lsa mAP 61.2 | 245 s spent, 0.49 runs/min, ETA of the rest ~2882 s'."""
    timed = [r["wall_s"] for r in report["records"] if r.get("wall_s") is not None]
    mean = statistics.mean(timed) if timed else 0.0
    rate = 60 * len(timed) / report["spent_s"] if report["spent_s"] else math.nan
    score = record.get("scores", {}).get("global+lsa mAP")
    if score is None:
        score = record.get("scores", {}).get("global mAP")
    what = f"{record['status']} in {_cell(record.get('wall_s'), 0)} s" + (
        f", mAP {score:.1f}" if score is not None else ""
    )
    eta = f"ETA of the rest ~{mean * len(rest):.0f} s" if rest else "last run"
    return f"{label}: {what} | {report['spent_s']:.0f} s spent, {rate:.2f} runs/min, {eta}"


if __name__ == "__main__":
    sys.exit(main())
