"""MobileNetV2 backbone: torchvision's parameter count and names, output stride, the depthwise layer against
XLA's grouped convolution, and equality with a PyTorch MobileNetV2 carrying the same (converted) weights."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gldfa_jax import pretrained
from gldfa_jax.config import get_config
from gldfa_jax.mobilenet import DepthwiseConv3x3, MobileNetV2, divisible_channels, output_channels
from gldfa_jax.model import build_model

# torchvision.models.mobilenet_v2(): 3,504,872 parameters, of which the classifier (1280 -> 1000) has 1,281,000.
TORCHVISION_PARAMS_WITHOUT_CLASSIFIER = 3_504_872 - 1_281_000


def abstract_init(module, shape):
    return jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))


def test_parameter_count_names_and_stride():
    fmap, variables = abstract_init(MobileNetV2(last_stride=2), (1, 224, 224, 3))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables["params"]))
    assert count == TORCHVISION_PARAMS_WITHOUT_CLASSIFIER
    chex.assert_shape(fmap, (1, 7, 7, 1280))
    params = variables["params"]
    # torchvision's names with "." -> "_": stem, a t = 1 block (no expansion), a t = 6 block, the last 1×1 conv.
    assert params["features_0_0"]["kernel"].shape == (3, 3, 3, 32)
    assert params["features_1_conv_0_0"]["kernel"].shape == (3, 3, 1, 32)  # depthwise
    assert params["features_1_conv_1"]["kernel"].shape == (1, 1, 32, 16)
    assert params["features_2_conv_0_0"]["kernel"].shape == (1, 1, 16, 96)
    assert params["features_2_conv_3"]["scale"].shape == (24,)
    assert params["features_18_0"]["kernel"].shape == (1, 1, 320, 1280)
    # Last stride 1 keeps the 160-channel stage at stride 16: 384×128 -> 24×8, the paper's ResNet map size.
    fmap, _ = abstract_init(MobileNetV2(last_stride=1), (2, 384, 128, 3))
    chex.assert_shape(fmap, (2, 24, 8, output_channels()))
    fmap, _ = abstract_init(MobileNetV2(last_stride=1, width_multiplier=0.5), (1, 67, 35, 3))  # odd sizes round up
    chex.assert_shape(fmap, (1, 5, 3, 1280))
    assert (divisible_channels(32 * 0.5), divisible_channels(16 * 0.35), output_channels(1.4)) == (16, 8, 1792)


@pytest.mark.parametrize("stride,size", [(1, (9, 6)), (2, (9, 6)), (2, (8, 5))])
def test_depthwise_equals_xla_grouped_convolution_with_gradients(stride, size):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, *size, 8))
    layer = DepthwiseConv3x3(stride)
    variables = layer.init(jax.random.PRNGKey(1), x)
    kernel = variables["params"]["kernel"]

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            (stride, stride),
            ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=8,
        )

    def ours(x, kernel):
        return layer.apply({"params": {"kernel": kernel}}, x)

    cotangent = jax.random.normal(jax.random.PRNGKey(2), reference(x, kernel).shape)
    for f in (ours, reference):
        chex.assert_shape(f(x, kernel), cotangent.shape)
    want = jax.vjp(reference, x, kernel)[1](cotangent)
    got = jax.vjp(ours, x, kernel)[1](cotangent)
    np.testing.assert_allclose(ours(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_gldfa_heads_on_mobilenet_and_per_stripe_head():
    c = get_config().model
    c.backbone, c.embed_dim = "mobilenet_v2", 32
    out, variables = jax.eval_shape(
        lambda: build_model(c, num_classes=7).init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 128, 64, 3)))
    )
    chex.assert_shape([out.global_feat, out.local_feat, out.logits], [(2, 32), (2, 8, 32), (2, 7)])
    assert variables["params"]["local_conv"]["kernel"].shape == (1, 1, 1280, 32)  # the 1280-channel map feeds them
    c.local_conv = "per_stripe"
    model = build_model(c, num_classes=7)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    params = variables["params"]
    assert "local_conv" not in params and params["local_conv_per_stripe"].shape == (8, 1280, 32)
    assert params["local_bn_per_stripe"]["scale"].shape == (8, 32)  # one BN per stripe
    out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_shape(out.local_feat, (4, 8, 32))
    # Each stripe has its own weights: the stripe's BN-normalised output depends only on its own kernel.
    moved = {**params, "local_conv_per_stripe": params["local_conv_per_stripe"].at[3].multiply(2.0)}
    out2, _ = model.apply({**variables, "params": moved}, x, train=True, mutable=["batch_stats"])
    changed = np.abs(np.asarray(out2.local_feat - out.local_feat)).max(axis=(0, 2)) > 1e-6
    assert not changed[[0, 1, 2, 4, 5, 6, 7]].any()
    c.local_conv = "per_part"
    with pytest.raises(ValueError, match=r"model.local_conv='per_part' is not supported.*'per_stripe'"):
        build_model(c, num_classes=7)
    c.local_conv, c.backbone = "shared", "mobilenet"
    with pytest.raises(ValueError, match=r"model.backbone='mobilenet'.*'mobilenet_v2'"):
        build_model(c, num_classes=7)


def torch_mobilenet(last_stride):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_reference import MobileNetV2 as TorchMobileNetV2

    torch.manual_seed(last_stride)
    net = TorchMobileNetV2(last_stride)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("last_stride,size,fmt", [(1, (64, 32), "safetensors"), (2, (67, 35), "pth")])
def test_flax_matches_pytorch_with_converted_weights(tmp_path, last_stride, size, fmt):
    torch = pytest.importorskip("torch")
    net = torch_mobilenet(last_stride)
    path = str(tmp_path / "mobilenet_v2.pth")
    torch.save(net.state_dict(), path)
    if fmt == "safetensors":
        pretrained.main(["convert", path, str(tmp_path / "mobilenet_v2.safetensors")])
        path = str(tmp_path / "mobilenet_v2.safetensors")
    x = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    model = MobileNetV2(last_stride=last_stride)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), jnp.zeros((1, *size, 3)))
    nan = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)  # every leaf must be loaded
    variables = pretrained.load_pretrained(path, nan, backbone="mobilenet_v2")
    got = jax.jit(functools.partial(model.apply, train=False))(variables, jnp.asarray(x))
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(
        ValueError, match=r"unexpected tensors \['features.0.0.weight'.*check that model.backbone \('resnet'\)"
    ):
        pretrained.load_pretrained(path, nan)  # a MobileNetV2 file into a model that says resnet
