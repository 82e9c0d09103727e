"""Device check: GLDFA-Net train-step throughput with compile time and model-FLOP utilisation, the PyTorch reference
beside it on the same device, a float16 training run, feature extraction, Market/MSMT17-scale LSA distance and
evaluation time, and peak device memory, in one run of under 8 minutes on one H100/H200.

On the GPU machine (Python 3.12, jax with CUDA, torch, no network) the wheels it lacks travel in the git-ignored
wheels/ folder, which benchmarks/device_wheels.sh fills here and whose last lines print the whole device call
(carry: wheels, and data/cuhk03_real_packed when benchmarks/pack_crops.py made it).

Writes OUT/device_check.json and OUT/device_check.md, rewritten after every section so that a run cut short keeps
what it measured, and prints the tables. Sizes ("presets"): the paper's (ResNet-50, 384×128, batches 32 and 128,
Market 3,368 × 19,732, MSMT17 11,659 × 82,161) on an accelerator or with --full; on a CPU backend reduced ones, said
on stdout and in the md; --smoke: the same code paths, tiny (ResNet-18 ×0.125, 64×32, batch 8, 2 steps). Sections
run in priority order; once the time budget is spent the remaining ones are skipped (never cut short): a section
starts only when the time left covers the last section of its kind, or its preset's estimate. A section that fails
(e.g. out of memory) records its error while the run goes on. --only KIND[,KIND] runs the sections of those kinds.
This module plans and runs the sections; benchmarks/device_sections.py measures (device_torch.py the PyTorch side),
benchmarks/device_report.py writes the tables.

    python -m benchmarks.device_check --out DIR [--smoke | --full] [--budget-s SECONDS] [--only train,torch,eval]
                                      [--data data/cuhk03_real_packed]
"""

import argparse
import dataclasses
import datetime
import functools
import gc
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable

import jax
import numpy as np
from tqdm import tqdm

from benchmarks import device_torch, train_step
from benchmarks.device_report import KINDS, markdown, write
from benchmarks.device_sections import (
    Sizes,
    distance_metrics,
    eval_metrics,
    feature_metrics,
    float16_run_metrics,
    torch_metrics,
    train_metrics,
)
from gldfa_jax.model import compute_dtype

MARKET_CAMERAS, MSMT_CAMERAS = 6, 15
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "flax",
    "optax",
    "numpy",
    "scipy",
    "torch",
    "triton",
)
REAL_CROPS = os.path.join(train_step.REPO, "data", "cuhk03_real_packed")  # benchmarks/pack_crops.py's output


PRESETS = {
    # The paper's network and input (§3.1, §4.1); Market-1501 and MSMT17 test-set sizes. bfloat16 first: what
    # model.dtype="auto" trains with on an H100/H200; float16 next (auto's choice below compute capability 8.0).
    # 400 s leaves the 10-minute call room for the machine's start, the pip install and the imports.
    "full": Sizes(
        depth=50,
        width_multiplier=1.0,
        embed_dim=256,
        num_stripes=8,
        image=(384, 128),
        batches=(32, 128),
        steps=10,
        feature_images=2048,
        feature_batch=128,
        market=(3368, 19732, 751),
        msmt=(11659, 82161, 3060),
        dtypes=("bfloat16", "float16", "float32"),
        float16_steps=300,
        budget_s=400.0,
        # torch.compile of ResNet-50's forward and backward (inductor) takes one to two minutes on a 16-core host;
        # the float16 run is one step compile (~50 s on an H100) and 300 steps; MSMT17: the 3-minute target.
        estimates=(("torch.compile", 120.0), ("float16 run", 90.0), ("MSMT17 evaluation", 180.0)),
    ),
    # The same network on a CPU (about 1 training img/s): small batches, a quarter of Market, an eighth of MSMT17.
    "cpu": Sizes(
        depth=50,
        width_multiplier=1.0,
        embed_dim=256,
        num_stripes=8,
        image=(384, 128),
        batches=(8, 16),
        steps=2,
        feature_images=64,
        feature_batch=32,
        market=(842, 4933, 188),
        msmt=(1457, 10270, 383),
        dtypes=("bfloat16", "float32"),
        float16_steps=12,
        budget_s=1800.0,
    ),
    # Every kind of section once, float32 only: a bfloat16 pass doubles the run on a CPU (~50 -> ~100 s on 2 shared
    # cores); tests/test_train.py checks the bfloat16 step. The float16 run runs (12 steps: two metric fetches).
    "smoke": Sizes(
        depth=18,
        width_multiplier=0.125,
        embed_dim=16,
        num_stripes=4,
        image=(64, 32),
        batches=(8,),
        steps=2,
        feature_images=32,
        feature_batch=16,
        market=(60, 300, 20),
        msmt=(80, 400, 20),
        dtypes=("float32",),
        float16_steps=12,
        budget_s=600.0,
    ),
}


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: plan() orders them
class Section:
    name: str
    kind: str  # one of KINDS: its table, and what --only selects
    params: dict  # the row's own columns
    fn: Callable[[], dict]  # -> metrics
    estimate_s: float = 0.0  # when > 0: the seconds it must have left to start (else: its kind's last wall)


def peak_bytes():
    """Peak device memory of this process so far in bytes, or "n/a" where the backend does not report it (CPU)."""
    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", "n/a")


def plan(config_path: str, sizes: Sizes, data_root: str) -> list:
    """Sections in priority order, a spent budget skipping the tail. First what the issue's targets need: JAX
    bfloat16 against PyTorch's float32 and AMP at both batches, the Market evaluation cold and warm, the float16
    run (no NaN), torch.compile at the first batch (PyTorch's best may be compiled). Then float16's throughput
    beside bfloat16's, features and distances (measured on an H100 before), the MSMT17 evaluation (the costliest:
    its own `--only eval` call when the budget skips it), and the rest of the train grid."""
    config = train_step.load_config(config_path)
    estimates = dict(sizes.estimates)
    flops_by_batch = {}  # batch -> the JAX step's FLOPs: the PyTorch rows' MFU
    size = lambda s: f"{s[0]:,} × {s[1]:,}"
    every_feature = ("global", "local", "final")
    market = tuple(sizes.market) + (MARKET_CAMERAS, every_feature)
    msmt_local, msmt = (tuple(sizes.msmt) + (MSMT_CAMERAS, keys) for keys in (("local",), every_feature))
    data = data_root if os.path.isdir(data_root) else None
    train = {
        (b, d): Section(
            f"train batch {b} {d}",
            "train",
            {"batch": b, "dtype": d},
            functools.partial(train_metrics, config_path, sizes, b, d, flops_by_batch),
        )
        for d in sizes.dtypes
        for b in sizes.batches
    }
    torch = {
        (b, v): Section(
            f"torch batch {b} {v.name}",
            "torch",
            {"batch": b, "variant": v.name},
            functools.partial(torch_metrics, config_path, sizes, b, v, flops_by_batch),
            estimates.get("torch.compile", 0.0) if v.compile else 0.0,
        )
        for v in device_torch.VARIANTS
        for b in sizes.batches
    }
    features = {
        d: Section(f"features {d}", "features", {"dtype": d}, functools.partial(feature_metrics, config_path, sizes, d))
        for d in sizes.dtypes
    }
    distance = [
        Section(
            f"{name} LSA distance",
            "distance",
            {"set": name, "size": size(split)},
            functools.partial(distance_metrics, config, split, "lsa"),
        )
        for name, split in (("Market-1501", market), ("MSMT17", msmt_local))
    ]
    evaluation = [
        Section(
            f"{name} evaluation",
            "eval",
            {"set": name, "size": size(split)},
            functools.partial(eval_metrics, config, split, warm),  # MSMT17 is big: cold only
            estimates.get(f"{name} evaluation", 0.0),
        )
        for name, split, warm in (("Market-1501", market, True), ("MSMT17", msmt, False))
    ]
    float16_run = Section(
        "float16 run",
        "float16_run",
        {
            "data": os.path.relpath(data, train_step.REPO) if data else f"synthetic noise (no {data_root})",
            "batch": sizes.batches[0],
        },
        functools.partial(float16_run_metrics, config_path, sizes, data),
        estimates.get("float16 run", 0.0),
    )
    first_batch, (first_dtype, *other_dtypes) = sizes.batches[0], sizes.dtypes
    eager = [v for v in device_torch.VARIANTS if not v.compile]
    compiled = [v for v in device_torch.VARIANTS if v.compile]
    ordered = [
        *(train[b, first_dtype] for b in sizes.batches),
        *(torch[b, v] for b in sizes.batches for v in eager),
        evaluation[0],
        float16_run,
        *(torch[first_batch, v] for v in compiled),
        *(train[first_batch, d] for d in other_dtypes[:1]),
        features[first_dtype],
        *distance,
        evaluation[1],
    ]
    return ordered + [s for s in (*train.values(), *torch.values(), *features.values()) if s not in ordered]


def parse_only(text: str | None) -> tuple | None:
    """--only's section kinds (comma-separated), None without --only."""
    if text is None:
        return None
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS] if kinds else [text]
    if unknown:
        raise ValueError(
            f"--only={text!r}: unknown section kind {unknown[0]!r}; choose from {', '.join(KINDS)} "
            "(comma-separated, e.g. --only train,torch,eval)"
        )
    return kinds


def run_section(section: Section, deadline: float, last_wall: dict) -> dict:
    """Run one section unless the time left is below its estimate or what the last section of its kind took;
    never raises (a failure is recorded as an error, device_torch.Skipped as skipped)."""
    kind = section.kind
    record = {
        "name": section.name,
        "kind": kind,
        "params": section.params,
        "status": "ok",
        "error": None,
        "wall_s": 0.0,
        "metrics": {},
        "peak_bytes_in_use": peak_bytes(),
    }
    left = deadline - time.perf_counter()
    estimate, basis = (
        (section.estimate_s, "its estimate is")
        if section.estimate_s
        else (last_wall.get(kind, 0.0), f"the last {kind!r} section took")
    )
    if left <= 0 or left < estimate:
        record.update(
            status="skipped",
            error=f"time budget: {left:.0f} s left, {basis} {estimate:.0f} s (raise --budget-s)",
        )
        return record
    gc.collect()  # the previous section's device buffers go before this one allocates
    tic = time.perf_counter()
    try:
        record["metrics"] = section.fn()
    except device_torch.Skipped as e:
        record.update(status="skipped", error=str(e))
    except Exception as e:  # noqa: BLE001 — one failure (e.g. out of memory) must not lose the other sections
        record.update(status="error", error=f"{type(e).__name__}: {e}"[:2000])
    record["wall_s"] = last_wall[kind] = time.perf_counter() - tic
    record["peak_bytes_in_use"] = peak_bytes()
    return record


def environment(preset: str) -> dict:
    device = jax.devices()[0]
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "preset": preset,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "compute_capability": getattr(device, "compute_capability", None),
        "auto_dtype": np.dtype(compute_dtype("auto")).name,
        "preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true"),
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for device_check.json and device_check.md")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny sizes: the code paths in about a minute on a CPU")
    size.add_argument(
        "--full",
        action="store_true",
        help="the GPU sizes also on a CPU backend (slow: ResNet-50 trains at ~1 img/s on a CPU)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds after which the remaining sections are skipped (default: the preset's)",
    )
    parser.add_argument("--only", default=None, help=f"comma-separated section kinds to run, of: {', '.join(KINDS)}")
    parser.add_argument(
        "--data",
        default=REAL_CROPS,
        help="Market-layout crops for the float16 run (default: benchmarks/pack_crops.py's output); absent: noise",
    )
    parser.add_argument("--config", default=os.path.join(train_step.REPO, "experiments", "market.py"))
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
    except ValueError as e:
        parser.error(str(e))
    if args.smoke:
        # Smoke numbers measure nothing: unoptimised LLVM code compiles the steps ~3× faster on a CPU. The backend
        # starts below (nothing imported above touches it), so the flag still applies.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    # JAX takes 75 % of the GPU's memory up front by default, which would leave the PyTorch sections a quarter:
    # allocating on demand lets both frameworks share it (device_torch empties torch's cache after each section).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    start = time.perf_counter()
    on_cpu = jax.default_backend() == "cpu"
    preset = "smoke" if args.smoke else "full" if args.full or not on_cpu else "cpu"
    sizes = PRESETS[preset]
    sections = [s for s in plan(args.config, sizes, args.data) if only is None or s.kind in only]
    budget = sizes.budget_s if args.budget_s is None else args.budget_s
    os.makedirs(args.out, exist_ok=True)
    env = environment(preset)
    print(f"device check: {env['device_kind']} ({env['backend']}), {preset!r} sizes, budget {budget:.0f} s")
    if on_cpu:
        print(
            "NO GPU: jax.default_backend() == 'cpu'; CPU numbers at "
            + (
                "the tiny --smoke sizes."
                if args.smoke
                else "the full sizes (--full)."
                if args.full
                else "reduced sizes (--full for the GPU sizes)."
            )
        )
    report = {
        "environment": env,
        "config": os.path.relpath(args.config, train_step.REPO),
        "sizes": dataclasses.asdict(sizes),
        "only": only,
        "budget_s": budget,
        "sections": [],
        "total_wall_s": 0.0,
        "peak_bytes_in_use": peak_bytes(),
    }
    last_wall = {}
    bar = tqdm(sections, desc="device check", unit="section")
    for section in bar:
        bar.set_postfix_str(section.name)
        report["sections"].append(run_section(section, start + budget, last_wall))
        report.update(total_wall_s=time.perf_counter() - start, peak_bytes_in_use=peak_bytes())
        write(args.out, report)
    bar.close()
    print(markdown(report))
    print(f"wrote {os.path.join(args.out, 'device_check.json')} and device_check.md")


if __name__ == "__main__":
    main()
