"""gldfa_jax.conv: the convolutions of resnet.conv (every backbone conv) give XLA's values and gradients, keep
nn.Conv's parameters, and take the matmul path exactly for 1×1 convolutions traced for CPU."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gldfa_jax import conv, resnet

# (kernel, stride) of every convolution in the backbones: ResNet's 7×7/2 stem, 3×3/1 and /2, 1×1/1 and /2 (the
# downsample); MobileNetV2 adds no other kind (its 3×3/2 stem and 1×1 expansions and projections).
KINDS = ((7, 2), (3, 1), (3, 2), (1, 1), (1, 2))
BATCH, HEIGHT, WIDTH, CIN, COUT = 2, 9, 7, 5, 6  # odd sizes: a stride 2 leaves a last row and column over


def relative_error(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def reference_conv(x, kernel, stride):
    """XLA's convolution with resnet.conv's padding (kernel // 2 on every side)."""
    pad = kernel.shape[0] // 2
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def inputs(kernel_size, dtype=jnp.float32):
    rng = np.random.default_rng(kernel_size)
    x = jnp.asarray(rng.normal(size=(BATCH, HEIGHT, WIDTH, CIN)), dtype)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, CIN, COUT)) / kernel_size, jnp.float32)
    return x, kernel


def primitives(fn, *args) -> set:
    """Names of the primitives in fn's jaxpr, nested jaxprs (custom_vjp, pjit) included."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


@pytest.mark.parametrize("kernel_size,stride", KINDS)
def test_values_and_gradients_equal_xla(kernel_size, stride):
    x, kernel = inputs(kernel_size)
    module = resnet.conv(COUT, kernel_size, stride, jnp.float32, "conv")
    out_shape = (BATCH, (HEIGHT - 1) // stride + 1, (WIDTH - 1) // stride + 1, COUT)
    weights = jnp.asarray(np.random.default_rng(7).normal(size=out_shape), jnp.float32)  # a generic output gradient
    ours = lambda x, kernel: jnp.sum(module.apply({"params": {"kernel": kernel}}, x) * weights)
    xla = lambda x, kernel: jnp.sum(reference_conv(x, kernel, stride) * weights)

    y = module.apply({"params": {"kernel": kernel}}, x)
    chex.assert_shape(y, out_shape)
    assert relative_error(y, reference_conv(x, kernel, stride)) < 1e-5
    (dx, dkernel), (dx_ref, dkernel_ref) = jax.grad(ours, (0, 1))(x, kernel), jax.grad(xla, (0, 1))(x, kernel)
    chex.assert_trees_all_equal_shapes_and_dtypes((dx, dkernel), (x, kernel))
    assert relative_error(dx, dx_ref) < 1e-5
    assert relative_error(dkernel, dkernel_ref) < 1e-5
    jitted = jax.jit(jax.grad(ours, (0, 1)))(x, kernel)  # compiled, the optimisation barrier and all
    assert max(relative_error(a, b) for a, b in zip(jitted, (dx_ref, dkernel_ref))) < 1e-5


@pytest.mark.parametrize("kernel_size,stride", KINDS)
def test_path_follows_kernel_and_backend(kernel_size, stride, monkeypatch):
    x, kernel = inputs(kernel_size)
    module = resnet.conv(COUT, kernel_size, stride, jnp.float32, "conv")
    # A new function for each trace: JAX caches a function's jaxpr, and with it the path chosen at its first trace.
    grad = lambda: jax.grad(lambda x, k: jnp.sum(module.apply({"params": {"kernel": k}}, x) ** 2), (0, 1))
    used = primitives(grad(), x, kernel)
    # The matmul path, its own gradients (behind their optimisation barrier) included: no convolution anywhere.
    if kernel_size == 1:
        assert "conv_general_dilated" not in used and {"dot_general", "optimization_barrier"} <= used, used
    else:
        assert "conv_general_dilated" in used and "optimization_barrier" not in used, used
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # traced for another backend: XLA's convolution
    used = primitives(grad(), x, kernel)
    assert "conv_general_dilated" in used and "optimization_barrier" not in used, used


@pytest.mark.parametrize("kernel_size,stride", KINDS)
def test_parameters_are_nn_conv(kernel_size, stride):
    """The same tree, shapes, dtypes and initial values as the nn.Conv resnet.conv configures, so checkpoints and
    gldfa_jax.pretrained's mappings hold."""
    x, _ = inputs(kernel_size)
    pad = kernel_size // 2
    plain = nn.Conv(
        COUT,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        param_dtype=jnp.float32,
        kernel_init=resnet.conv_init,
    )
    ours = resnet.conv(COUT, kernel_size, stride, jnp.float32, "conv").init(jax.random.PRNGKey(3), x)
    chex.assert_trees_all_equal(ours, plain.init(jax.random.PRNGKey(3), x))
    chex.assert_shape(ours["params"]["kernel"], (kernel_size, kernel_size, CIN, COUT))


@pytest.mark.parametrize("dtype,tolerance", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
@pytest.mark.parametrize("stride", (1, 2))
def test_mixed_precision_1x1_follows_nn_conv(dtype, tolerance, stride):
    """Inputs and kernel computed in `dtype` as nn.Conv does; the kernel's gradient stays float32 like the param."""
    x, kernel = inputs(1, dtype)
    params = {"params": {"kernel": kernel}}
    ours = resnet.conv(COUT, 1, stride, dtype, "conv")
    plain = nn.Conv(COUT, (1, 1), strides=(stride, stride), padding=((0, 0), (0, 0)), use_bias=False, dtype=dtype)
    y, y_ref = ours.apply(params, x), plain.apply(params, x)
    chex.assert_trees_all_equal_shapes_and_dtypes(y, y_ref)
    assert relative_error(y, y_ref) < tolerance
    grad = lambda m: jax.grad(lambda p: jnp.sum(m.apply(p, x).astype(jnp.float32) ** 2))(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(grad(ours), params)
    assert relative_error(grad(ours)["params"]["kernel"], grad(plain)["params"]["kernel"]) < 2 * tolerance


def test_pointwise_only_for_plain_1x1():
    nhwc = ("NHWC", "HWIO", "NHWC")
    plain = dict(padding=((0, 0), (0, 0)), lhs_dilation=None, rhs_dilation=(1, 1), dimension_numbers=nhwc)
    assert conv.is_pointwise((1, 1, 4, 8), feature_group_count=1, **plain)
    assert not conv.is_pointwise((3, 3, 4, 8), feature_group_count=1, **plain)
    assert not conv.is_pointwise((1, 1, 1, 8), feature_group_count=8, **plain)
    assert not conv.is_pointwise((1, 1, 4, 8), feature_group_count=1, **{**plain, "padding": ((1, 1), (1, 1))})
    assert not conv.is_pointwise((1, 1, 4, 8), feature_group_count=1, **{**plain, "padding": "SAME"})
    assert not conv.is_pointwise((1, 1, 4, 8), feature_group_count=1, **{**plain, "lhs_dilation": (2, 2)})
    assert not conv.is_pointwise((1, 1, 4, 8), feature_group_count=1, **{**plain, "rhs_dilation": (2, 2)})
    nchw = ("NCHW", "OIHW", "NCHW")
    assert not conv.is_pointwise((1, 1, 1, 1), feature_group_count=1, **{**plain, "dimension_numbers": nchw})
