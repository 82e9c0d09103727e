"""ResNet backbone: torchvision shapes and parameter counts, stride/padding arithmetic, BN conventions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gldfa_jax.resnet import ResNet, batch_norm, output_channels

# torchvision.models.resnetXX() parameter counts minus the 1000-way fc layer (weight + bias).
TORCHVISION_PARAMS_WITHOUT_FC = {
    18: 11_689_512 - (512 * 1000 + 1000),
    34: 21_797_672 - (512 * 1000 + 1000),
    50: 25_557_032 - (2048 * 1000 + 1000),
    101: 44_549_160 - (2048 * 1000 + 1000),
}


def abstract_init(module, shape):
    return jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_full_width_matches_torchvision_parameter_count(depth):
    fmap, variables = abstract_init(ResNet(depth=depth, last_stride=2), (1, 224, 224, 3))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables["params"]))
    assert count == TORCHVISION_PARAMS_WITHOUT_FC[depth]
    chex.assert_shape(fmap, (1, 7, 7, output_channels(depth)))


@pytest.mark.parametrize("last_stride,expected", [(1, (24, 8)), (2, (12, 4))])
def test_paper_map_size_at_384x128(last_stride, expected):
    """§3.1 / Table 1: last stride 1 turns the 12×4 map of a 384×128 image into 24×8."""
    fmap, _ = abstract_init(ResNet(depth=50, last_stride=last_stride, width_multiplier=0.125), (2, 384, 128, 3))
    chex.assert_shape(fmap, (2, *expected, output_channels(50, 0.125)))
    assert output_channels(50) == 2048


def test_odd_input_follows_pytorch_size_arithmetic():
    def out(n, k, s, p):
        return (n + 2 * p - k) // s + 1

    h, w = 65, 33
    for k, s, p in [(7, 2, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1)]:  # stem, max pool, layers 2-4
        h, w = out(h, k, s, p), out(w, k, s, p)
    fmap, _ = abstract_init(ResNet(depth=18, last_stride=2, width_multiplier=0.125), (1, 65, 33, 3))
    chex.assert_shape(fmap, (1, h, w, output_channels(18, 0.125)))


def test_width_multiplier_and_compute_dtype():
    model = ResNet(depth=18, last_stride=1, width_multiplier=0.25, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    fmap = model.apply(variables, x, train=False)
    chex.assert_shape(fmap, (2, 4, 2, 128))
    assert fmap.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 16)  # HWIO


def test_batch_norm_matches_pytorch_momentum_and_eps():
    """PyTorch: running = 0.9·running + 0.1·batch (momentum 0.1); y = (x - mean) / sqrt(var + 1e-5)."""
    bn = batch_norm(train=True, dtype=jnp.float32, axis_name=None, name=None)
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 3)) * 2.0 + 1.0
    variables = bn.init(jax.random.PRNGKey(0), x)
    y, state = bn.apply(variables, x, mutable=["batch_stats"])
    mean, var = np.mean(x, 0), np.var(x, 0)
    np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth=42"):
        abstract_init(ResNet(depth=42), (1, 64, 32, 3))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("shape", [(2, 9, 6, 3), (1, 10, 7, 2)])
def test_stem_pool_equals_padded_max_pool_with_its_gradient(dtype, shape):
    """The ONNX-friendly stem pooling (-inf padding, VALID) is flax's padded max pooling, value for value and
    gradient for gradient, ties (ReLU zeros) and negative inputs included."""
    import flax.linen as nn

    from gldfa_jax.resnet import stem_pool

    x = jax.nn.relu(jnp.asarray(np.random.default_rng(0).normal(size=shape), dtype) - 0.3)
    x = x.at[0, 0].set(-2.0)  # a border row below every padding value but -inf
    padded = lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(np.asarray(stem_pool(x), np.float32), np.asarray(padded(x), np.float32))
    weights = jnp.asarray(np.random.default_rng(1).normal(size=stem_pool(x).shape), dtype)
    grad = lambda f: jax.grad(lambda v: jnp.sum((f(v) * weights).astype(jnp.float32)))(x)
    np.testing.assert_array_equal(np.asarray(grad(stem_pool), np.float32), np.asarray(grad(padded), np.float32))
