"""Train-step throughput (images/s after compilation) of GLDFA-Net: the JAX data-parallel step of
gldfa_jax.train beside the same step written in PyTorch (when torch imports), at 384×128 and 256×128,
batch P×K = 8×4 = 32 (paper §4.1), each library on the same number of threads. Prints one markdown table, or with
--json one JSON line per (size, thread count): {"jax_img_s", "torch_img_s", "ratio", "depth", "height", "width",
"batch", "threads"}, ratio = JAX / PyTorch (torch_img_s and ratio are null without torch).

    python -m benchmarks.train_step [--config experiments/market.py] [--steps 3] [--sizes 384x128,256x128]
                                    [--depth 50] [--width 1.0] [--threads 1,2] [--json]

Both steps do the same work: ResNet forward/backward in training mode (batch statistics), the GLDFA head,
label-smoothed ID loss, soft-weighted triplet on the global Euclidean and the local LSA distances, centre loss,
Adam (L2 1e-5) on the weights and SGD on the centres. Inputs are pre-augmented float images.

Threads: each count is measured in a process that may use only that many CPUs (`pin_threads`; a child process per
count when there are several), with torch.set_num_threads set to it: XLA:CPU sizes its thread pool to the CPUs the
process may run on, once, when its backend starts (checked: a jitted 2048² matmul loop used 1.00 CPU-seconds per
second pinned to 1 CPU, 1.96 on 2). JAX's compile + first-step time goes to stderr.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np

from gldfa_jax import parallel, train
from gldfa_jax.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUM_CLASSES = 751  # Market-1501 training identities


def load_config(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def batch(config, height, width, seed=0, uint8=False):
    """One P×K batch: images [B, H, W, 3] (float32 normal noise, or uint8 pixels when `uint8`), labels [B] int32."""
    rng = np.random.default_rng(seed)
    p, k = config.data.num_identities, config.data.num_instances
    shape = (p * k, height, width, 3)
    images = rng.integers(0, 256, shape, np.uint8) if uint8 else rng.normal(size=shape).astype(np.float32)
    labels = np.repeat(rng.choice(NUM_CLASSES, p, replace=False), k).astype(np.int32)
    return images, labels


def time_steps(step, steps: int) -> tuple:
    """(compile + first step seconds, [seconds of each of the next `steps`]). Callers on a shared machine take the
    minimum (the least disturbed)."""
    tic = time.perf_counter()
    step()
    first = time.perf_counter() - tic
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        step()
        times.append(time.perf_counter() - tic)
    return first, times


def init_variables(config, height, width):
    """Model variables of `config.model` for images (height, width, 3) (the same for every model.dtype)."""
    rng = jax.jit(lambda: jax.random.PRNGKey(0))()  # made on the device: no implicit transfer
    return train.init_variables(build_model(config.model, NUM_CLASSES), rng, (height, width, 3))


def step_parts(config, height, width, fused=False, variables=None) -> tuple:
    """(the data-parallel step, its replicated TrainState, its arguments on the devices) for one fixed batch.

    fused=False: `train.make_train_step` on pre-augmented float images (the work the PyTorch column does).
    fused=True: `train.make_batch_step`, the step training runs: uint8 images, augmentation on the device.
    The optimiser is the training loop's, float16's dynamic loss scale included. variables: the model's starting
    variables (default: init_variables); passing them saves compiling the init.
    """
    model = build_model(config.model, NUM_CLASSES, axis_name=parallel.AXIS)
    tx = train.make_optimizer(config.optim, 100, train.loss_scale_for(config, model))
    shape = (height, width, 3)
    variables = init_variables(config, height, width) if variables is None else variables
    state_rng = jax.jit(lambda: jax.random.PRNGKey(1))()  # made on the device: no implicit transfer
    state = parallel.replicate(train.create_train_state(model, tx, variables, NUM_CLASSES, state_rng, shape))
    images, labels = batch(config, height, width, uint8=fused)
    if fused:  # the batch as training streams it: whole on every device, row 0 of `order` picks all of it
        p_step = parallel.data_parallel(train.make_batch_step(model, tx, config), donate_argnums=(0,))
        args = parallel.replicate((images, labels, np.arange(len(labels), dtype=np.int32)[None]))
    else:
        p_step = parallel.data_parallel(train.make_train_step(model, tx, config), donate_argnums=(0,))
        n = parallel.num_devices()
        args = (parallel.shard_batch(images, n), parallel.shard_batch(labels, n))
    return p_step, state, args


def jax_step(config, height, width, fused=False, variables=None):
    """A closure running one `step_parts` step on its fixed batch, waiting for it and returning its metrics (on
    the device)."""
    p_step, state, args = step_parts(config, height, width, fused, variables)
    holder = [state]

    def step():
        holder[0], metrics = p_step(holder[0], *args)
        return jax.block_until_ready(metrics)

    return step


def torch_step(config, height, width):
    """One float32 training step of benchmarks.torch_reference (the independent PyTorch GLDFA-Net) on the CPU, the
    step device_check times beside JAX (`device_torch.reference_step`)."""
    from benchmarks import device_torch

    return device_torch.reference_step(config, height, width, device_torch.VARIANTS[0], "cpu")[0]


def check_threads(threads: int) -> None:
    allowed = len(os.sched_getaffinity(0))
    if not 1 <= threads <= allowed:
        raise ValueError(
            f"--threads {threads}: this process may use {allowed} CPU(s); pass counts from 1 to {allowed}."
        )


def pin_threads(threads: int) -> None:
    """Let this process run on its first `threads` allowed CPUs only. Called before JAX starts its backend, this
    sizes XLA:CPU's thread pool to `threads` (it counts the CPUs the process may run on); PyTorch's pool is set by
    torch.set_num_threads."""
    check_threads(threads)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def parse_sizes(text: str) -> list:
    """'384x128,256x128' -> [(384, 128), (256, 128)]."""
    try:
        return [tuple(int(v) for v in s.split("x", 1)) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--sizes {text!r}: give HEIGHTxWIDTH pairs separated by commas, e.g. 256x128.") from None


def measure(config, sizes, threads: int, steps: int):
    """Yield one result row per (height, width) in `sizes`, JAX and PyTorch each on `threads` threads. Call in a
    fresh process: it pins this process to `threads` CPUs before JAX's backend starts."""
    pin_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    b = config.data.num_identities * config.data.num_instances
    for h, w in sizes:
        first, times = time_steps(jax_step(config, h, w), steps)
        print(f"# {h}×{w}, {threads} thread(s): JAX compile + first step {first:.1f} s", file=sys.stderr, flush=True)
        jax_rate = b / min(times)
        torch_rate = b / min(time_steps(torch_step(config, h, w), steps)[1]) if torch else None
        yield {
            "jax_img_s": round(jax_rate, 3),
            "torch_img_s": round(torch_rate, 3) if torch else None,
            "ratio": round(jax_rate / torch_rate, 3) if torch else None,
            "depth": config.model.depth,
            "height": h,
            "width": w,
            "batch": b,
            "threads": threads,
        }


def child_rows(args, threads: int):
    """The rows of `threads` measured by a process of its own (this module with --threads `threads` --json)."""
    argv = [sys.executable, "-m", "benchmarks.train_step", "--config", args.config, "--steps", str(args.steps)]
    argv += ["--sizes", args.sizes, "--threads", str(threads), "--json"]
    argv += ["--depth", str(args.depth)] if args.depth else []
    argv += ["--width", str(args.width)] if args.width else []
    with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True) as child:
        yield from (json.loads(line) for line in child.stdout)
    if child.returncode:
        raise RuntimeError(f"benchmarks.train_step --threads {threads} failed with exit status {child.returncode}.")


def torch_version() -> str:
    try:
        import torch
    except ImportError:
        return "torch not importable: PyTorch columns empty"
    return f"torch {torch.__version__}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "experiments", "market.py"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (compiling) one")
    parser.add_argument("--sizes", default="384x128,256x128")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--width", type=float, default=None, help="model.width_multiplier")
    parser.add_argument("--threads", default="1,2", help="thread counts to measure, each for JAX and PyTorch alike")
    parser.add_argument("--json", action="store_true", help="one JSON line per (size, thread count), no table")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.depth:
        config.model.depth = args.depth
    if args.width:
        config.model.width_multiplier = args.width
    sizes = parse_sizes(args.sizes)
    threads = [int(t) for t in args.threads.split(",")]
    for t in threads:
        check_threads(t)
    if not args.json:
        b = config.data.num_identities * config.data.num_instances
        print(
            f"# train step, ResNet-{config.model.depth} ×{config.model.width_multiplier}, batch {b}, "
            f"{datetime.date.today()}, {platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
            f"JAX {jax.__version__}, {torch_version()}; img/s, fastest of {args.steps} steps after the first"
        )
        print("| input | threads | JAX img/s | PyTorch img/s | JAX / PyTorch |\n|---|---|---|---|---|")
    # XLA:CPU fixes its thread pool when its backend starts, so each further thread count needs a process of its own.
    if len(threads) == 1:
        rows = measure(config, sizes, threads[0], args.steps)
    else:
        rows = (row for t in threads for row in child_rows(args, t))
    for row in rows:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            cells = [f"{row[k]:.2f}" if row[k] is not None else "-" for k in ("jax_img_s", "torch_img_s", "ratio")]
            print(f"| {row['height']}×{row['width']} | {row['threads']} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
