"""Why gldfa_jax.mobilenet writes its depthwise 3×3 conv as nine shifted multiply-adds: forward + backward time of
XLA's grouped convolution (feature_group_count = C) against that form, at MobileNetV2's depthwise layer shapes for a
128×64 input with last stride 1 (batch 32).

    python -m benchmarks.depthwise_conv [--batch 32] [--repeats 10]

Prints a markdown table (milliseconds per forward + backward, and the ratio).
"""

import argparse
import time

import jax
import jax.numpy as jnp

from gldfa_jax import mobilenet

# (height, width, channels, stride) of the depthwise layers of MobileNetV2 at 128×64 (one of each kind).
LAYERS = ((64, 32, 32, 1), (64, 32, 96, 2), (32, 16, 144, 1), (32, 16, 144, 2), (16, 8, 192, 2), (8, 4, 960, 1))


def grouped(x, kernel, stride):
    pad = ((1, 1), (1, 1))
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), pad, dimension_numbers=dims, feature_group_count=x.shape[-1]
    )


def shifted(x, kernel, stride):
    return mobilenet.DepthwiseConv3x3(stride).apply({"params": {"kernel": kernel}}, x)


def time_grad(loss, args, repeats: int) -> float:
    """Milliseconds per call of the jitted gradient of `loss` (after a compiling call)."""
    step = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    jax.block_until_ready(step(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = step(*args)
    jax.block_until_ready(out)
    return 1e3 * (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    rows = []
    for h, w, c, stride in LAYERS:
        x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, h, w, c))
        kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, c))
        times = [
            time_grad(lambda x, k, f=f, s=stride: jnp.sum(f(x, k, s) ** 2), (x, kernel), args.repeats)
            for f in (grouped, shifted)
        ]
        rows.append((f"depthwise {h}×{w}×{c}, stride {stride}", *times))
    print(f"batch {args.batch}, {jax.devices()[0].platform}, jax {jax.__version__}, forward + backward, ms")
    print("| layer | grouped conv | shifted multiply-adds | speed-up |\n|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.1f}× |")


if __name__ == "__main__":
    main()
