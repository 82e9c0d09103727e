"""2-D convolution for nn.Conv's `conv_general_dilated` hook: on XLA:CPU a 1×1 convolution runs as matmuls.

XLA:CPU computes a convolution's filter gradient (dW) as another convolution over the whole feature map, with
transposes and copies around it: 4-46 GFLOP/s at ResNet-50's 1×1 shapes, against 52-150 for the same product as one
matmul, `x.T @ g` (benchmarks/conv_grad.py, 1 and 2 threads). A 1×1 convolution is a matmul over the pixels, so on
CPU it is computed as one in both directions: forward `x @ W`, backward dW = x.T @ g and dx = g @ W.T
(`channel_matmul`). A stride s takes every s-th pixel first; autodiff scatters its gradient back with zeros between.
Larger kernels keep XLA's convolution: as k² per-tap matmuls or one im2col matmul, dW of the 7×7 stem and of five of
ResNet-50's six 3×3 shapes measured slower than XLA's, and the sixth occurs once (docs/benchmarks.md, "CPU train
step").

The path is chosen when a function is traced, by `jax.default_backend()`: other backends keep XLA's convolution.
The parameters are nn.Conv's own, and jax2onnx replaces nn.Conv.__call__ (hook included) during ONNX export, so
an exported ONNX model holds Conv nodes whichever path training used.
"""

import jax
from jax import lax

# nn.Conv's layout (input NHWC, kernel HWIO), as lax.conv_general_dilated normalises it.
NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def channel_matmul(x: jax.Array, weight: jax.Array) -> jax.Array:
    """x [..., Cin] @ weight [Cin, Cout] -> [..., Cout], its gradients as two matmuls (below)."""
    return x @ weight


def _channel_matmul_fwd(x, weight):
    return x @ weight, (x, weight)


def _channel_matmul_bwd(residuals, g):
    """dx = g @ W.T [..., Cin]; dW = x.T @ g [Cin, Cout], summed over every pixel of the batch."""
    x, weight = residuals
    # Written out rather than left to JAX's derivative of `x @ W` (the same products): with that one, XLA fused the
    # transpose dW's matmul needs into the loop producing g (BatchNorm's backward pass), which then wrote g column by
    # column, a fifth of the ResNet-50 step in a profile (256×128, 2 threads: 3.70 img/s against 4.69 with this
    # rule). The barrier keeps that fusion out of this rule too: 4.55 img/s without it.
    g = lax.optimization_barrier(g)
    dw = x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])
    return g @ weight.T, dw


channel_matmul.defvjp(_channel_matmul_fwd, _channel_matmul_bwd)


def is_pointwise(kernel_shape, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count) -> bool:
    """Whether these lax.conv_general_dilated arguments describe a plain 1×1 convolution: NHWC input, HWIO kernel
    (nn.Conv's layout), no padding, dilation or feature groups."""
    unit = lambda dilation: dilation is None or all(d == 1 for d in dilation)
    return (
        tuple(kernel_shape[:2]) == (1, 1)
        and not isinstance(padding, str)
        and all(tuple(p) == (0, 0) for p in padding)
        and unit(lhs_dilation)
        and unit(rhs_dilation)
        and feature_group_count == 1
        and lax.conv_dimension_numbers((1, 1, 1, 1), kernel_shape, dimension_numbers) == NHWC
    )


def pointwise(x: jax.Array, kernel: jax.Array, strides=(1, 1)) -> jax.Array:
    """1×1 convolution as a matmul: x [B, H, W, Cin], kernel [1, 1, Cin, Cout] -> [B, ⌈H/sh⌉, ⌈W/sw⌉, Cout]
    (padding 0), equal to lax.conv_general_dilated's."""
    sh, sw = strides
    return channel_matmul(x[:, ::sh, ::sw], kernel[0, 0])


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
):
    """`lax.conv_general_dilated` (nn.Conv's call), except that a plain 1×1 convolution traced for XLA:CPU runs as
    `pointwise`. `precision` other than None keeps XLA's convolution, which honours it."""
    if (
        jax.default_backend() == "cpu"
        and precision is None
        and is_pointwise(rhs.shape, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count)
    ):
        return pointwise(lhs, rhs, tuple(window_strides))
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
    )
