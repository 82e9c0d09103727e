"""The measurements of benchmarks.device_check, one function per kind of section, each returning its metrics: the
JAX train step (compiled ahead of time, so that XLA's FLOP count of the very program timed gives its model-FLOP
utilisation), the PyTorch reference's step beside it (benchmarks.device_torch), a float16 training run through the
training loop, feature extraction, and the LSA distance and the evaluation on synthetic features. `Sizes` says how
large (device_check.PRESETS).
"""

import dataclasses
import functools
import re
import tempfile
import time

import jax
import numpy as np

from benchmarks import device_torch, retrieval, train_step
from gldfa_jax import distances, evaluation, experiment_data, features, loop, parallel
from gldfa_jax.lsa import LSAOptions
from gldfa_jax.model import build_model

FLOAT16_LOG_EVERY = 10  # the float16 run's metric fetches (train.log_every): skips counted per 10 steps
FLOAT16_SETTLING_STEPS = 20  # the loss scale falls from 2**15 to where the gradients fit in its first steps


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one preset measures."""

    depth: int
    width_multiplier: float
    embed_dim: int
    num_stripes: int
    image: tuple  # (H, W)
    batches: tuple  # global train batches P × K (K = data.num_instances = 4)
    steps: int  # timed train steps after the compiling one (JAX and PyTorch)
    feature_images: int  # images of one feature-extraction timing
    feature_batch: int  # eval.batch_size
    market: tuple  # synthetic (query, gallery, identities)
    msmt: tuple
    dtypes: tuple  # model.dtype values of the train and feature sections, in priority order
    float16_steps: int  # steps of the float16 training run
    budget_s: float  # default --budget-s
    # (section, seconds) expected of a section whose kind's earlier sections say nothing of its time: it starts
    # only when that much budget is left.
    estimates: tuple = ()


# Dense (no sparsity) tensor-core peak TFLOP/s of one device per compute dtype, from NVIDIA's data sheets (H100
# Tensor Core GPU datasheet for H100 SXM, PCIe and NVL; H200 Tensor Core GPU datasheet; A100, L4, T4 and V100
# datasheets; the sheets print the sparse figure, twice these). float32 uses the TF32 peak where the chip has TF32
# (Ampere and later): XLA at its default precision and PyTorch (torch.backends.cudnn.allow_tf32, on by default)
# run float32 convolutions as TF32 there, and the float32 GLDFA step measured on an H100 (2,262 img/s × 35.7
# GFLOP per image, XLA's count) ran at ~81 TFLOP/s, above the 67 of plain FP32, which so cannot be its ceiling.
# T4 and V100 have no TF32 and no bfloat16: their FP32 peak. Keys: regular expressions on jax's device_kind, the
# first match wins.
PEAK_TFLOPS = (
    (r"\bH[12]00 NVL\b", {"bfloat16": 835.5, "float16": 835.5, "float32": 417.5}),
    (r"\bH100 PCIe\b", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0}),
    (r"\bH[12]00\b", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7}),  # SXM
    (r"\bA100\b", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}),
    (r"\bL4\b", {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0}),
    (r"\bT4\b", {"float16": 65.0, "float32": 8.1}),
    (r"\bV100-SXM2\b", {"float16": 125.0, "float32": 15.7}),
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


def batch_config(config_path: str, sizes: Sizes, batch: int, dtype: str):
    """preset_config with P = batch / K identities per batch."""
    c = preset_config(train_step.load_config(config_path), sizes, dtype)
    c.data.num_identities = batch // c.data.num_instances
    return c


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """The device's dense peak FLOP/s in `dtype` (PEAK_TFLOPS), None for a device or dtype not in the table."""
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_kind):
            return 1e12 * peaks[dtype] if dtype in peaks else None
    return None


def mfu(flops: float | None, step_s: float, dtype: str) -> float | None:
    """Model-FLOP utilisation of a step of `flops` (all devices) taking step_s, or None (FLOPs or peak unknown)."""
    peak = peak_flops(jax.devices()[0].device_kind, dtype)
    return flops / step_s / (peak * jax.local_device_count()) if flops and peak else None


def step_rates(batch: int, times: list, flops: float | None, dtype: str) -> dict:
    """img/s, median and minimum step ms and MFU of timed steps (seconds each)."""
    median = float(np.median(times))
    return {
        "images_per_s": batch / median,
        "step_ms": 1e3 * median,
        "step_min_ms": 1e3 * min(times),
        "mfu": mfu(flops, median, dtype),
    }


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program on one device, from XLA's cost analysis (a dict; a list of one
    dict per program in some jax versions); None where the backend gives none. (The unoptimised program's count,
    `Lowered.cost_analysis`, is not implemented for PJRT plugin backends such as CUDA's.)"""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = (cost or {}).get("flops", 0.0)
    return float(flops) if flops > 0 else None


@functools.lru_cache(maxsize=1)
def initial_variables(config_path: str, sizes: Sizes) -> dict:
    """The preset's model variables, shared by every section: one compile of the init, not one per section."""
    return train_step.init_variables(preset_config(train_step.load_config(config_path), sizes, "float32"), *sizes.image)


def train_metrics(config_path: str, sizes: Sizes, batch: int, dtype: str, flops_by_batch: dict) -> dict:
    """The step the training loop runs (train_step.step_parts, fused), compiled ahead of time so that XLA's cost
    analysis of the very program timed gives its FLOPs. Stores the step's FLOPs (all devices) in flops_by_batch for
    the PyTorch rows of the same batch."""
    c = batch_config(config_path, sizes, batch, dtype)
    p_step, state, args = train_step.step_parts(
        c, *sizes.image, fused=True, variables=initial_variables(config_path, sizes)
    )
    tic = time.perf_counter()
    compiled = p_step.lower(state, *args).compile()
    compile_s = time.perf_counter() - tic
    flops = xla_flops(compiled)
    flops = flops and flops * parallel.num_devices()
    if flops:
        flops_by_batch.setdefault(batch, flops)
    holder, last = [state], {}

    def step():
        holder[0], metrics = compiled(holder[0], *args)
        last.update(jax.block_until_ready(metrics))

    first, times = train_step.time_steps(step, sizes.steps)
    return {
        **step_rates(batch, times, flops, dtype),
        "compile_s": compile_s,
        "compile_and_first_step_s": compile_s + first,
        "gflop_per_image": flops and flops / batch / 1e9,
        "loss": float(jax.device_get(last["total"])[0]),  # [devices]: every device holds the global loss
    }


def torch_metrics(config_path: str, sizes: Sizes, batch: int, variant, flops_by_batch: dict) -> dict:
    """device_torch's step of `variant` at `batch`; MFU from the JAX step's FLOPs at that batch, when one ran."""
    c = batch_config(config_path, sizes, batch, "float32")
    first, times, extra = device_torch.time_train_steps(c, *sizes.image, variant, sizes.steps)
    rates = step_rates(batch, times, flops_by_batch.get(batch), "bfloat16" if variant.amp else "float32")
    return {**rates, "compile_s": first - rates["step_ms"] / 1e3, **extra}


class _Recorder:
    """The metric writer the float16 run's loop writes to (gldfa_jax.metric_writer's write/flush): keeps each
    fetch's (step, means)."""

    def __init__(self):
        self.rows = []

    def write(self, step: int, split: str, scalars: dict) -> None:
        self.rows.append((step, dict(scalars)))

    def flush(self) -> None:
        pass


def float16_data(config, data_root: str | None):
    """The run's ExperimentData: the real crops at data_root (Market layout, decoded at the run's size), or, with
    data_root None, uint8 noise in a P×K-sampleable set (2P identities × 2K images)."""
    if data_root:
        config.data.name, config.data.root = "market_layout", data_root
        return experiment_data.load_experiment_data(config.data)
    d = config.data
    ids, per_id = 2 * d.num_identities, 2 * d.num_instances
    images = np.random.default_rng(0).integers(0, 256, (ids * per_id, d.height, d.width, 3), np.uint8)
    pids = np.repeat(np.arange(ids), per_id)
    empty = experiment_data.Split(images[:0], pids[:0], pids[:0])
    return experiment_data.ExperimentData(experiment_data.Split(images, pids, np.zeros_like(pids)), empty, empty, ids)


def float16_run_metrics(config_path: str, sizes: Sizes, data_root: str | None) -> dict:
    """sizes.float16_steps real training steps in float16 through the training loop, from random weights, at the
    preset's first batch (the paper's 32 at full size) and the config's optimiser; the loop stops with
    NonFiniteLossError on a NaN/inf loss."""
    c = batch_config(config_path, sizes, sizes.batches[0], "float16")
    t = c.train
    t.epochs, t.steps_per_epoch, t.log_every, t.checkpoint_every_steps = 1, sizes.float16_steps, FLOAT16_LOG_EVERY, 0
    data = float16_data(c, data_root)
    recorder = _Recorder()
    with tempfile.TemporaryDirectory() as workdir:
        run = loop.setup(c, workdir, data, recorder)
        state, _ = loop.restore_or_initialise(run)
        state = parallel.replicate(state)
        run.log.restart_clock()  # as loop.train_and_evaluate: initialisation is not training time
        state = loop.train_epoch(run, state, 0, 0)
        run.store.close()
    weights = parallel.unreplicate({"params": state.params, "batch_stats": state.batch_stats})
    ends = [step for step, _ in recorder.rows]
    counts = np.diff([0] + ends)  # steps per fetch
    means = [m for _, m in recorder.rows]
    skipped = [round(m["skipped"] * n) for m, n in zip(means, counts)]
    batch = c.data.num_identities * c.data.num_instances
    seconds = [batch * n / m["images_per_s"] for m, n in zip(means, counts)]  # each fetch's wall
    steady = float(np.median([s / n for s, n in zip(seconds[1:], counts[1:])])) if len(seconds) > 1 else None
    return {
        "steps": int(sum(counts)),
        "skipped": int(sum(skipped)),
        "skipped_after_settling": int(sum(s for s, end in zip(skipped, ends) if end > FLOAT16_SETTLING_STEPS)),
        "loss_scale": means[-1]["loss_scale"],
        "losses": f"{means[0]['total']:.3f} → {means[-1]['total']:.3f}",
        "nonfinite_params": int(sum(not np.isfinite(w).all() for w in jax.tree.leaves(weights))),
        "images_per_s": steady and batch / steady,
        "compile_s": steady and seconds[0] - counts[0] * steady,
    }


def feature_metrics(config_path: str, sizes: Sizes, dtype: str) -> dict:
    c = preset_config(train_step.load_config(config_path), sizes, dtype)
    model = build_model(c.model, train_step.NUM_CLASSES)
    variables = initial_variables(config_path, sizes)
    shape = tuple(sizes.image) + (3,)
    images = np.random.default_rng(0).integers(0, 256, (sizes.feature_images,) + shape, np.uint8)
    size = sizes.feature_batch
    tic = time.perf_counter()
    features.extract_features(model, variables, images[:size], c.data, batch_size=size)
    first = time.perf_counter() - tic
    tic = time.perf_counter()
    features.extract_features(model, variables, images, c.data, batch_size=size)
    end_to_end = time.perf_counter() - tic
    # The same compiled network without the host transfers, dispatched back to back.
    statics = dict(model=model, flip=bool(c.data.test_flip), mean=tuple(c.data.mean), std=tuple(c.data.std))
    x = jax.device_put(images[:size])
    reps = max(1, sizes.feature_images // size)
    tic = time.perf_counter()
    for _ in range(reps):
        out = features._features(variables, x, **statics)
    jax.block_until_ready(out)
    on_device = time.perf_counter() - tic
    return {
        "images": len(images),
        "images_per_s": len(images) / end_to_end,
        "device_images_per_s": reps * size / on_device,
        "compile_and_first_s": first,
        "compile_s": first - end_to_end * size / len(images),
    }


# Two cached: the Market sections share theirs, and MSMT17's distance and evaluation run back to back.
synthetic_split = functools.lru_cache(maxsize=2)(retrieval.synthetic_split)


def distance_metrics(config, split: tuple, mode: str) -> dict:
    """`split`: synthetic_split's arguments."""
    q_feats, g_feats = synthetic_split(*split)[:2]
    num_q, num_g = len(q_feats["local"]), len(g_feats["local"])
    block = config.eval.block_size
    kwargs = dict(lsa_options=LSAOptions.from_config(config.lsa), block_size=block)
    warm = min(num_q, block + num_q % block)  # one query block of each shape the timed call runs: compiles them
    tic = time.perf_counter()
    distances.pairwise_distance({k: v[:warm] for k, v in q_feats.items()}, g_feats, mode, **kwargs)
    first = time.perf_counter() - tic
    tic = time.perf_counter()
    distances.pairwise_distance(q_feats, g_feats, mode, **kwargs)  # returns numpy: waits for the device
    seconds = time.perf_counter() - tic
    return {
        "seconds": seconds,
        "mega_pairs_per_s": num_q * num_g / seconds / 1e6,
        "compile_and_warmup_s": first,
        "compile_s": first - seconds * warm / num_q,
    }


def eval_metrics(config, split: tuple, warm: bool) -> dict:
    """Every mode of config.eval.modes (re-ranked as config.eval says) on synthetic_split(*split): cold, and with
    `warm` the identical call again."""
    args, options = synthetic_split(*split), evaluation.EvalOptions.from_config(config)
    tic = time.perf_counter()
    results = evaluation.evaluate(*args, options).results
    cold = time.perf_counter() - tic
    warm_s = None
    if warm:
        tic = time.perf_counter()
        evaluation.evaluate(*args, options)
        warm_s = time.perf_counter() - tic
    return {
        "cold_s": cold,
        "warm_s": warm_s,
        "compile_s": warm_s and cold - warm_s,
        "results": {mode: {"mAP": r["mAP"], "rank1": r["rank1"]} for mode, r in results.items()},
    }
