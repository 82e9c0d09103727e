"""Train-step throughput (images/s after compilation) of GLDFA-Net: the JAX data-parallel step of
gldfa_jax.train beside the same step written in PyTorch (when torch imports), at 384×128 and 256×128,
batch P×K = 8×4 = 32 (paper §4.1). Prints one markdown table.

    python -m benchmarks.train_step [--config experiments/market.py] [--steps 3] [--sizes 384x128,256x128]
                                    [--depth 50] [--width 1.0] [--threads N]

Both steps do the same work: ResNet forward/backward in training mode (batch statistics), the GLDFA head,
label-smoothed ID loss, soft-weighted triplet on the global Euclidean and the local LSA distances, centre loss,
Adam (L2 1e-5) on the weights and SGD on the centres. Inputs are pre-augmented float images.
"""

import argparse
import datetime
import os
import platform
import time

import jax
import numpy as np

from data_pipelines.sampler import shard_batch
from gldfa_jax import train
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


def jax_step(config, height, width, fused=False, variables=None):
    """A closure running one data-parallel JAX train step on a fixed batch, waiting for it and returning its
    metrics (on the device).

    fused=False: `train.make_train_step` on pre-augmented float images (the work the PyTorch column does).
    fused=True: `train.make_batch_step`, the step training runs: uint8 images, augmentation on the device.
    variables: the model's starting variables (default: init_variables); passing them saves compiling the init.
    """
    model = build_model(config.model, NUM_CLASSES, axis_name=train.AXIS)
    tx = train.make_optimizer(config.optim, 100)
    shape = (height, width, 3)
    variables = init_variables(config, height, width) if variables is None else variables
    state_rng = jax.jit(lambda: jax.random.PRNGKey(1))()  # made on the device: no implicit transfer
    state = train.replicate(train.create_train_state(model, tx, variables, NUM_CLASSES, state_rng, shape))
    images, labels = batch(config, height, width, uint8=fused)
    if fused:  # the batch as training streams it: whole on every device, row 0 of `order` picks all of it
        p_step = train.data_parallel(train.make_batch_step(model, tx, config), donate_argnums=(0,))
        args = train.replicate((images, labels, np.arange(len(labels), dtype=np.int32)[None]))
    else:
        p_step = train.data_parallel(train.make_train_step(model, tx, config), donate_argnums=(0,))
        n = train.num_devices()
        args = (shard_batch(images, n), shard_batch(labels, n))
    holder = [state]

    def step():
        holder[0], metrics = p_step(holder[0], *args)
        return jax.block_until_ready(metrics)

    return step


def torch_step(config, height, width):
    """One training step of benchmarks.torch_reference (the independent PyTorch GLDFA-Net)."""
    import torch

    from benchmarks import torch_reference as ref

    net = ref.GLDFANet(config.model, NUM_CLASSES).train()
    opt, center_opt, centers = ref.optimizers(net, config, NUM_CLASSES)
    images, labels = batch(config, height, width)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # PyTorch's NCHW
    y = torch.from_numpy(labels).long()

    def step():
        ref.update(net(x), y, centers, opt, center_opt, config)

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "experiments", "market.py"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (compiling) one")
    parser.add_argument("--sizes", default="384x128,256x128")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--width", type=float, default=None, help="model.width_multiplier")
    parser.add_argument("--threads", default="1,2", help="PyTorch intra-op thread counts to measure")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.depth:
        config.model.depth = args.depth
    if args.width:
        config.model.width_multiplier = args.width
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    try:
        import torch

        torch_info = f"torch {torch.__version__}"
    except ImportError:
        torch, threads, torch_info = None, [], "torch not importable: PyTorch columns skipped"
    b = config.data.num_identities * config.data.num_instances
    print(
        f"# train step, ResNet-{config.model.depth} ×{config.model.width_multiplier}, batch {b}, "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
        f"JAX {jax.__version__} on {jax.default_backend()} ({jax.local_device_count()} device(s)), {torch_info}"
    )
    torch_cols = [f"PyTorch {t} thread(s) img/s" for t in threads]
    print("| input | JAX img/s | JAX compile + 1st step s | " + " | ".join(torch_cols + ["best PyTorch / JAX"]) + " |")
    print("|---" * (4 + len(threads)) + "|")
    for h, w in sizes:
        first, times = time_steps(jax_step(config, h, w), args.steps)
        jax_rate = b / min(times)
        rates = []
        for t in threads:
            torch.set_num_threads(t)
            rates.append(b / min(time_steps(torch_step(config, h, w), args.steps)[1]))
        cells = [f"{r:.1f}" for r in rates] + ([f"{max(rates) / jax_rate:.2f}×"] if rates else ["-"])
        print(f"| {h}×{w} | {jax_rate:.1f} | {first:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
