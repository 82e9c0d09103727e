"""Device check: GLDFA-Net train-step and feature-extraction throughput, Market/MSMT17-scale LSA distance time,
Market evaluation time and peak device memory, in one run of under 8 minutes on one H100/H200.

On the GPU machine (Python 3.12, jax with CUDA, no network) the git-ignored wheels/ folder must travel with the tree
(device tool: carry=["wheels"]); it holds ml_collections and PyYAML (the configs) and pytest with its dependencies
(benchmarks.retrieval imports the reference loops of tests/test_evaluation.py, which import pytest):

    pip install --no-index --find-links wheels ml_collections pytest && python -m benchmarks.device_check --out $OUT

Writes OUT/device_check.json and OUT/device_check.md, rewritten after every section so that a run cut short keeps
what it measured, and prints the tables. Sizes ("presets"): the paper's (ResNet-50, 384×128, batches 32 and 128,
Market 3,368 × 19,732, MSMT17 11,659 × 82,161) on an accelerator or with --full; on a CPU backend reduced ones, said
on stdout and in the md; --smoke: the same code paths, tiny (ResNet-18 ×0.125, 64×32, batch 8, 2 steps). Sections
run in priority order; once the time budget is spent the remaining ones are skipped (never cut short), and a section
that fails (e.g. out of memory) records its error while the run goes on.

    python -m benchmarks.device_check --out DIR [--smoke | --full] [--budget-s SECONDS]
"""

import argparse
import dataclasses
import datetime
import functools
import gc
import importlib.metadata
import json
import math
import os
import platform
import time
import types

import jax
import numpy as np
from tqdm import tqdm

from benchmarks import retrieval, train_step
from gldfa_jax import distances, inference
from gldfa_jax.model import build_model, compute_dtype

MARKET_CAMERAS, MSMT_CAMERAS = 6, 15
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "numpy", "scipy")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one preset measures."""

    depth: int
    width_multiplier: float
    embed_dim: int
    num_stripes: int
    image: tuple  # (H, W)
    batches: tuple  # global train batches P × K (K = data.num_instances = 4)
    steps: int  # timed train steps after the compiling one
    feature_images: int  # images of one feature-extraction timing
    feature_batch: int  # eval.batch_size
    market: tuple  # synthetic (query, gallery, identities)
    msmt: tuple
    dtypes: tuple  # model.dtype values of the train and feature sections, in priority order
    budget_s: float  # default --budget-s


PRESETS = {
    # The paper's network and input (§3.1, §4.1); Market-1501 and MSMT17 test-set sizes. bfloat16 first: what
    # model.dtype="auto" trains with on an H100/H200. ~400 s leaves room for the start and the pip install in 8 min.
    "full": Sizes(
        50,
        1.0,
        256,
        8,
        (384, 128),
        (32, 128),
        10,
        2048,
        128,
        (3368, 19732, 751),
        (11659, 82161, 3060),
        ("bfloat16", "float32"),
        400.0,
    ),
    # The same network on a CPU (about 1 training img/s): small batches, a quarter of Market, an eighth of MSMT17.
    "cpu": Sizes(
        50,
        1.0,
        256,
        8,
        (384, 128),
        (8, 16),
        2,
        64,
        32,
        (842, 4933, 188),
        (1457, 10270, 383),
        ("bfloat16", "float32"),
        1800.0,
    ),
    # Every section once, float32 only: a bfloat16 pass doubles the run on a CPU (~50 -> ~100 s on 2 shared cores);
    # tests/test_train.py checks the bfloat16 step.
    "smoke": Sizes(18, 0.125, 16, 4, (64, 32), (8,), 2, 32, 16, (60, 300, 20), (80, 400, 20), ("float32",), 600.0),
}

# (kind, title, columns (header, key, format)); every table ends with wall s, peak memory and status.
TABLES = (
    (
        "train",
        "Train step: `train.make_batch_step` (on-device augmentation, forward/backward, GLDFA losses, Adam), "
        "K = 4; img/s from the median step",
        (
            ("batch", "batch", "{}"),
            ("dtype", "dtype", "{}"),
            ("img/s", "images_per_s", "{:,.1f}"),
            ("step ms (median)", "step_ms", "{:,.1f}"),
            ("step ms (min)", "step_min_ms", "{:,.1f}"),
            ("compile + 1st step s", "compile_and_first_step_s", "{:.1f}"),
            ("loss", "loss", "{:.3f}"),
        ),
    ),
    (
        "features",
        "Feature extraction: `inference.extract_features` (uint8 host images -> numpy features) and its "
        "jitted `_features` on a device-resident batch",
        (
            ("dtype", "dtype", "{}"),
            ("images", "images", "{:,}"),
            ("img/s end to end", "images_per_s", "{:,.1f}"),
            ("img/s on device", "device_images_per_s", "{:,.1f}"),
            ("compile + 1st batch s", "compile_and_first_s", "{:.1f}"),
        ),
    ),
    (
        "distance",
        "LSA distance: `distances.pairwise_distance` (k = 8, d = 256, W = 4, block 2048), synthetic features",
        (
            ("set", "set", "{}"),
            ("Q × G", "size", "{}"),
            ("s", "seconds", "{:.2f}"),
            ("M pairs/s", "mega_pairs_per_s", "{:,.1f}"),
            ("compile + warm-up s", "compile_and_warmup_s", "{:.2f}"),
        ),
    ),
    (
        "eval",
        "Market evaluation: `inference.evaluate_features`, one mode per row (wall s = the evaluation, compiles "
        "included), synthetic identity-clustered features",
        (
            ("mode", "mode", "{}"),
            ("Q × G", "size", "{}"),
            ("re-ranking", "rerank", "{}"),
            ("mAP", "mAP", "{:.1f}"),
            ("R-1", "rank1", "{:.1f}"),
            ("mAP re-ranked", "rerank_mAP", "{:.1f}"),
            ("R-1 re-ranked", "rerank_rank1", "{:.1f}"),
        ),
    ),
)


def preset_config(config, sizes: Sizes, dtype: str):
    """The Market config with the preset's network and input and `model.dtype` = dtype."""
    c = config.copy_and_resolve_references()
    m = c.model
    m.depth, m.width_multiplier, m.embed_dim, m.num_stripes = (
        sizes.depth,
        sizes.width_multiplier,
        sizes.embed_dim,
        sizes.num_stripes,
    )
    m.dtype = dtype
    c.data.height, c.data.width = sizes.image
    c.eval.batch_size = sizes.feature_batch
    return c


def peak_bytes():
    """Peak device memory of this process so far in bytes, or "n/a" where the backend does not report it (CPU)."""
    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", "n/a")


@functools.lru_cache(maxsize=1)
def initial_variables(config_path: str, sizes: Sizes) -> dict:
    """The preset's model variables, shared by every section: one compile of the init, not one per section."""
    return train_step.init_variables(preset_config(train_step.load_config(config_path), sizes, "float32"), *sizes.image)


def train_metrics(config_path: str, sizes: Sizes, batch: int, dtype: str) -> dict:
    c = preset_config(train_step.load_config(config_path), sizes, dtype)
    c.data.num_identities = batch // c.data.num_instances
    step = train_step.jax_step(c, *sizes.image, fused=True, variables=initial_variables(config_path, sizes))
    last = {}
    first, times = train_step.time_steps(lambda: last.update(step()), sizes.steps)
    median = float(np.median(times))
    return {
        "images_per_s": batch / median,
        "step_ms": 1e3 * median,
        "step_min_ms": 1e3 * min(times),
        "compile_and_first_step_s": first,
        "loss": float(jax.device_get(last["total"])[0]),
    }  # [devices]: every device holds the global loss


def feature_metrics(config_path: str, sizes: Sizes, dtype: str) -> dict:
    c = preset_config(train_step.load_config(config_path), sizes, dtype)
    model = build_model(c.model, train_step.NUM_CLASSES)
    variables = initial_variables(config_path, sizes)
    shape = tuple(sizes.image) + (3,)
    images = np.random.default_rng(0).integers(0, 256, (sizes.feature_images,) + shape, np.uint8)
    size = sizes.feature_batch
    tic = time.perf_counter()
    inference.extract_features(model, variables, images[:size], c.data, batch_size=size)
    first = time.perf_counter() - tic
    tic = time.perf_counter()
    inference.extract_features(model, variables, images, c.data, batch_size=size)
    end_to_end = time.perf_counter() - tic
    # The same compiled network without the host transfers, dispatched back to back.
    statics = dict(model=model, flip=bool(c.data.test_flip), mean=tuple(c.data.mean), std=tuple(c.data.std))
    x = jax.device_put(images[:size])
    reps = max(1, sizes.feature_images // size)
    tic = time.perf_counter()
    for _ in range(reps):
        out = inference._features(variables, x, **statics)
    jax.block_until_ready(out)
    on_device = time.perf_counter() - tic
    return {
        "images": len(images),
        "images_per_s": len(images) / end_to_end,
        "device_images_per_s": reps * size / on_device,
        "compile_and_first_s": first,
    }


@functools.lru_cache(maxsize=1)
def synthetic_split(num_q: int, num_g: int, ids: int, cams: int, keys: tuple) -> tuple:
    """Identity-clustered features of Market's shapes (global [N, 256], local [N, 8, 256], final [N, 2304]; only
    `keys`) from benchmarks.retrieval -> (q_feats, g_feats, query, gallery), query/gallery with .pids/.camids.
    One cached: the Market sections share theirs."""
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = retrieval.labels(rng, num_q, num_g, ids, cams)
    g_feat_pids = np.where(g_pids == 0, rng.integers(ids + 1, 2 * ids, num_g), g_pids)  # distractors: own clusters
    dims = {"global": (retrieval.D,), "local": (retrieval.K, retrieval.D), "final": ((retrieval.K + 1) * retrieval.D,)}
    q_feats, g_feats = {}, {}
    for key in keys:
        q_feats[key], g_feats[key] = retrieval.features(rng, [q_pids, g_feat_pids], dims[key], noise=2.5)
    return (
        q_feats,
        g_feats,
        types.SimpleNamespace(pids=q_pids, camids=q_cams),
        types.SimpleNamespace(pids=g_pids, camids=g_cams),
    )


def distance_metrics(config, split: tuple, mode: str) -> dict:
    """`split`: synthetic_split's arguments."""
    q_feats, g_feats = synthetic_split(*split)[:2]
    num_q, num_g = len(q_feats["local"]), len(g_feats["local"])
    block = config.eval.block_size
    kwargs = dict(inference.lsa_options(config), block_size=block)
    warm = min(num_q, block + num_q % block)  # one query block of each shape the timed call runs: compiles them
    tic = time.perf_counter()
    distances.pairwise_distance({k: v[:warm] for k, v in q_feats.items()}, g_feats, mode, **kwargs)
    first = time.perf_counter() - tic
    tic = time.perf_counter()
    distances.pairwise_distance(q_feats, g_feats, mode, **kwargs)  # returns numpy: waits for the device
    seconds = time.perf_counter() - tic
    return {"seconds": seconds, "mega_pairs_per_s": num_q * num_g / seconds / 1e6, "compile_and_warmup_s": first}


def eval_metrics(config, split: tuple, mode: str) -> dict:
    """`split`: synthetic_split's arguments."""
    results = inference.evaluate_features(*synthetic_split(*split), config, modes=(mode,))
    plain, reranked = results[mode], results.get(mode + "+rerank", {})
    return {
        "mAP": plain["mAP"],
        "rank1": plain["rank1"],
        **({"rerank_mAP": reranked["mAP"], "rerank_rank1": reranked["rank1"]} if reranked else {}),
    }


def plan(config_path: str, sizes: Sizes) -> list:
    """(name, kind, params, fn) in priority order: a spent budget skips the tail."""
    config = train_step.load_config(config_path)
    steps = []
    for dtype in sizes.dtypes:
        for batch in sizes.batches:
            steps.append(
                (
                    f"train batch {batch} {dtype}",
                    "train",
                    {"batch": batch, "dtype": dtype},
                    functools.partial(train_metrics, config_path, sizes, batch, dtype),
                )
            )
    for dtype in sizes.dtypes:
        steps.append(
            (
                f"features {dtype}",
                "features",
                {"dtype": dtype},
                functools.partial(feature_metrics, config_path, sizes, dtype),
            )
        )
    market = tuple(sizes.market) + (MARKET_CAMERAS, ("global", "local", "final"))
    msmt = tuple(sizes.msmt) + (MSMT_CAMERAS, ("local",))
    size = lambda s: f"{s[0]:,} × {s[1]:,}"
    steps.append(
        (
            "Market LSA distance",
            "distance",
            {"set": "Market-1501", "size": size(market)},
            functools.partial(distance_metrics, config, market, "lsa"),
        )
    )
    steps.append(
        (
            "MSMT17 LSA distance",
            "distance",
            {"set": "MSMT17", "size": size(msmt)},
            functools.partial(distance_metrics, config, msmt, "lsa"),
        )
    )
    for mode in config.eval.modes:
        steps.append(
            (
                f"Market evaluation {mode}",
                "eval",
                {"mode": mode, "size": size(market), "rerank": bool(config.eval.rerank)},
                functools.partial(eval_metrics, config, market, mode),
            )
        )
    return steps


def run_section(name: str, kind: str, params: dict, fn, deadline: float, last_wall: dict) -> dict:
    """Run one section unless the time left is below what the last section of its kind took; never raises."""
    record = {
        "name": name,
        "kind": kind,
        "params": params,
        "status": "ok",
        "error": None,
        "wall_s": 0.0,
        "metrics": {},
        "peak_bytes_in_use": peak_bytes(),
    }
    left, estimate = deadline - time.perf_counter(), last_wall.get(kind, 0.0)
    if left <= 0 or left < estimate:
        record.update(
            status="skipped",
            error=f"time budget: {left:.0f} s left, the last {kind!r} section took {estimate:.0f} s (raise --budget-s)",
        )
        return record
    gc.collect()  # the previous section's device buffers go before this one allocates
    tic = time.perf_counter()
    try:
        record["metrics"] = fn()
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
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cell(fmt: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _gib(value) -> str:
    return f"{value / 2**30:.2f}" if isinstance(value, int) else "n/a"


def markdown(report: dict) -> str:
    env, sizes = report["environment"], report["sizes"]
    v, peak = env["versions"], report["peak_bytes_in_use"]
    peak = f"{_gib(peak)} GiB" if isinstance(peak, int) else "n/a (not reported by this backend)"
    lines = [
        f"# GLDFA-Net device check ({env['preset']} sizes)",
        "",
        f"{env['date']}: {env['device_kind']} ({env['platform']}, {env['device_count']} device(s)), "
        f"Python {v['python']}, " + ", ".join(f"{k} {v[k]}" for k in PACKAGES if k in v) + ".",
        "",
    ]
    if env["backend"] == "cpu":
        lines += [
            f"**No GPU: jax.default_backend() == 'cpu'. These are CPU numbers at the {env['preset']!r} sizes, "
            "not GPU measurements.**",
            "",
        ]
    lines += [
        f"ResNet-{sizes['depth']} ×{sizes['width_multiplier']}, {sizes['image'][0]}×{sizes['image'][1]}, "
        f"k = {sizes['num_stripes']}, d = {sizes['embed_dim']}, {report['config']}; model.dtype 'auto' "
        f"is {env['auto_dtype']} here. Peak device memory: {peak} (peak GiB columns: this process's peak "
        f"up to the end of the row). Total {report['total_wall_s']:.0f} s "
        f"(budget {report['budget_s']:.0f} s).",
        "",
    ]
    for kind, title, columns in TABLES:
        rows = [s for s in report["sections"] if s["kind"] == kind]
        if not rows:
            continue
        headers = [h for h, _, _ in columns] + ["wall s", "peak GiB", "status"]
        lines += [f"## {title}", "", "| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
        for s in rows:
            values = {**s["params"], **s["metrics"]}
            status = s["status"] if s["error"] is None else f"{s['status']}: {s['error'][:160]}"
            status = " ".join(status.replace("|", "/").split())  # one table row, whatever the error text holds
            cells = [_cell(fmt, values.get(key)) for _, key, fmt in columns]
            cells += [f"{s['wall_s']:.1f}", _gib(s.get("peak_bytes_in_use")), status]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write(out: str, report: dict) -> None:
    with open(os.path.join(out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "device_check.md"), "w") as f:
        f.write(markdown(report))


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
    parser.add_argument("--config", default=os.path.join(train_step.REPO, "experiments", "market.py"))
    args = parser.parse_args(argv)
    if args.smoke:
        # Smoke numbers measure nothing: unoptimised LLVM code compiles the steps ~3× faster on a CPU. The backend
        # starts below (nothing imported above touches it), so the flag still applies.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    start = time.perf_counter()
    on_cpu = jax.default_backend() == "cpu"
    preset = "smoke" if args.smoke else "full" if args.full or not on_cpu else "cpu"
    sizes = PRESETS[preset]
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
        "budget_s": budget,
        "sections": [],
        "total_wall_s": 0.0,
        "peak_bytes_in_use": peak_bytes(),
    }
    last_wall = {}
    bar = tqdm(plan(args.config, sizes), desc="device check", unit="section")
    for name, kind, params, fn in bar:
        bar.set_postfix_str(name)
        report["sections"].append(run_section(name, kind, params, fn, start + budget, last_wall))
        report.update(total_wall_s=time.perf_counter() - start, peak_bytes_in_use=peak_bytes())
        write(args.out, report)
    bar.close()
    print(markdown(report))
    print(f"wrote {os.path.join(args.out, 'device_check.json')} and device_check.md")


if __name__ == "__main__":
    main()
