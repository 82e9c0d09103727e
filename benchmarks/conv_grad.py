"""Why gldfa_jax.conv runs 1×1 convolutions as matmuls on CPU and leaves larger kernels to XLA: forward, input
gradient (dx) and filter gradient (dW) time of XLA's convolution against the matmul forms, at ResNet-50's conv shapes
for a 256×128 input with last stride 1 (one of each shape, batch 32).

    python -m benchmarks.conv_grad [--batch 32] [--repeats 5] [--threads 1] [--kinds 1x1,3x3,7x7]

1×1: gldfa_jax.conv.pointwise (forward x @ W, dx = g @ W.T, dW = x.T @ g). k×k: dW as k² per-tap matmuls of the
shifted input, and as one im2col matmul, the two forms gldfa_jax.conv does not use. Prints a markdown table
(milliseconds, the least of `repeats` calls of each jitted function, the functions interleaved twice; GFLOP/s of the
convolution's 2·B·h·w·k²·Cin·Cout).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.train_step import pin_threads
from gldfa_jax import conv

# (input height, width, Cin, Cout, kernel, stride) of ResNet-50's convolutions at 256×128, last stride 1.
LAYERS = (
    (256, 128, 3, 64, 7, 2),
    (64, 32, 64, 64, 1, 1),
    (64, 32, 64, 256, 1, 1),
    (64, 32, 256, 64, 1, 1),
    (64, 32, 256, 128, 1, 1),
    (64, 32, 256, 512, 1, 2),
    (32, 16, 128, 512, 1, 1),
    (32, 16, 512, 128, 1, 1),
    (32, 16, 512, 1024, 1, 2),
    (16, 8, 256, 1024, 1, 1),
    (16, 8, 1024, 256, 1, 1),
    (16, 8, 1024, 2048, 1, 1),
    (16, 8, 2048, 512, 1, 1),
    (16, 8, 512, 2048, 1, 1),
    (64, 32, 64, 64, 3, 1),
    (64, 32, 128, 128, 3, 2),
    (32, 16, 128, 128, 3, 1),
    (32, 16, 256, 256, 3, 2),
    (16, 8, 256, 256, 3, 1),
    (16, 8, 512, 512, 3, 1),
)


def xla(x, kernel, stride):
    """XLA's convolution, padding kernel // 2 on every side (resnet.conv's)."""
    pad = kernel.shape[0] // 2
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=dims)


def taps(x, kernel_size: int, stride: int, out_hw):
    """The k² shifted, strided views of the padded input x [B, H, W, Cin], one per kernel tap: each [B, h, w, Cin]."""
    (h, w), pad = out_hw, kernel_size // 2
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    end = lambda i, n: i + stride * (n - 1) + 1
    return [
        x[:, i : end(i, h) : stride, j : end(j, w) : stride] for i in range(kernel_size) for j in range(kernel_size)
    ]


def dw_per_tap(x, g, kernel_shape, stride):
    """dW [k, k, Cin, Cout] as k² matmuls, tap.T @ g."""
    g2 = g.reshape(-1, g.shape[-1])
    rows = [t.reshape(-1, t.shape[-1]).T @ g2 for t in taps(x, kernel_shape[0], stride, g.shape[1:3])]
    return jnp.stack(rows).reshape(kernel_shape)


def dw_im2col(x, g, kernel_shape, stride):
    """dW [k, k, Cin, Cout] as one matmul of the k² taps side by side [B·h·w, k²·Cin] with g."""
    columns = jnp.concatenate(taps(x, kernel_shape[0], stride, g.shape[1:3]), axis=-1)
    return (columns.reshape(-1, columns.shape[-1]).T @ g.reshape(-1, g.shape[-1])).reshape(kernel_shape)


def forms(kernel_size: int, stride: int) -> dict:
    """{column name: f(x, g, kernel)} of the forms measured for a kernel_size×kernel_size convolution."""
    reference = lambda x, kernel: xla(x, kernel, stride)
    dw_of = lambda fn: lambda x, g, kernel: jax.vjp(lambda k: fn(x, k), kernel)[1](g)[0]
    dx_of = lambda fn: lambda x, g, kernel: jax.vjp(lambda x: fn(x, kernel), x)[1](g)[0]
    fns = {"fwd XLA": lambda x, g, kernel: reference(x, kernel), "dx XLA": dx_of(reference), "dW XLA": dw_of(reference)}
    if kernel_size == 1:
        ours = lambda x, kernel: conv.pointwise(x, kernel, (stride, stride))
        fns.update({"fwd ours": lambda x, g, kernel: ours(x, kernel), "dx ours": dx_of(ours), "dW ours": dw_of(ours)})
    else:
        fns["dW ours"] = lambda x, g, kernel: dw_per_tap(x, g, kernel.shape, stride)
        fns["dW im2col"] = lambda x, g, kernel: dw_im2col(x, g, kernel.shape, stride)
    return fns


def best_ms(fn, args, repeats: int) -> float:
    """Milliseconds of the fastest of `repeats` calls of the compiled `fn` (after a first call)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return 1e3 * min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPUs (and so XLA:CPU threads) of this process")
    parser.add_argument("--kinds", default="1x1,3x3,7x7", help="kernel sizes to measure")
    args = parser.parse_args(argv)
    pin_threads(args.threads)  # before JAX starts its backend, which sizes its thread pool once
    kinds = {int(k.split("x")[0]) for k in args.kinds.split(",")}
    rng = np.random.default_rng(0)
    print(
        f"batch {args.batch}, {args.threads} thread(s), jax {jax.__version__}: ms (GFLOP/s), fastest of {args.repeats}"
    )
    print("| conv | fwd XLA | fwd ours | dx XLA | dx ours | dW XLA | dW ours (1×1) / per tap | dW im2col |")
    print("|---|---|---|---|---|---|---|---|")
    for height, width, cin, cout, k, stride in LAYERS:
        if k not in kinds:
            continue
        pad = k // 2
        h, w = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
        x = jnp.asarray(rng.normal(size=(args.batch, height, width, cin)), jnp.float32)
        g = jnp.asarray(rng.normal(size=(args.batch, h, w, cout)), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
        jitted = {name: jax.jit(fn) for name, fn in forms(k, stride).items()}
        expected = np.asarray(jitted["dW XLA"](x, g, kernel))
        for name in ("dW ours", "dW im2col"):
            if name in jitted:  # a form that computed something else would be timed for nothing
                error = np.max(np.abs(np.asarray(jitted[name](x, g, kernel)) - expected)) / np.max(np.abs(expected))
                assert error < 1e-4, f"{name} of a {k}×{k}/{stride} conv differs from XLA's by {error:.1e} (relative)"
        ms = {}
        for _ in range(2):  # interleaved, so that a burst of load elsewhere does not land on one form only
            for name, fn in jitted.items():
                ms[name] = min(ms.get(name, np.inf), best_ms(fn, (x, g, kernel), args.repeats))
        gflop = 2 * args.batch * h * w * k * k * cin * cout / 1e9
        cells = [
            f"{ms[name]:.1f} ({gflop / ms[name] * 1e3:.0f})" if name in ms else "-"
            for name in ("fwd XLA", "fwd ours", "dx XLA", "dx ours", "dW XLA", "dW ours", "dW im2col")
        ]
        print(f"| {k}×{k}/{stride} {height}×{width} {cin}→{cout} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
