"""GLDFA head (§3.1): shapes at the paper's size, stripe pooling, branch switches, outputs for test."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gldfa_jax.config import get_config
from gldfa_jax.model import GLDFAOutput, build_model, compute_dtype, horizontal_pool, stripe_bins
from gldfa_jax.model import test_features as features_for_test
from gldfa_jax.resnet import output_channels


def tiny_config(**overrides):
    c = get_config().model
    c.depth, c.width_multiplier, c.embed_dim = 18, 0.125, 16
    c.update(overrides)
    return c


def run(config, shape=(4, 64, 32, 3), train=False, num_classes=5):
    model = build_model(config, num_classes)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    # Eager (not jitted) on purpose: the tests share layer shapes, so op-by-op compiles are reused.
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    if train:
        out, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, variables, state
    return model.apply(variables, x, train=False), variables, None


def test_paper_shapes_at_384x128():
    """ResNet-50, last stride 1: 24×8 map, k = 8 stripes of 256, final 256·(k+1) = 2304 (Table 1)."""
    config = get_config().model
    config.width_multiplier = 0.25  # channels do not change the spatial arithmetic
    model = build_model(config, num_classes=751)

    def init_and_run():
        return model.init_with_output(
            jax.random.PRNGKey(0),
            jnp.zeros((2, 384, 128, 3)),
            train=False,
            capture_intermediates=lambda mdl, _: mdl.name == "backbone",
        )

    out, variables = jax.eval_shape(init_and_run)
    fmap = variables["intermediates"]["backbone"]["__call__"][0]
    chex.assert_shape(fmap, (2, 24, 8, output_channels(50, 0.25)))
    chex.assert_shape(
        [out.global_feat, out.local_feat, out.final_feat, out.logits], [(2, 256), (2, 8, 256), (2, 256 * 9), (2, 751)]
    )


@pytest.mark.parametrize("height,k", [(24, 8), (4, 8), (7, 3), (5, 4), (1, 3)])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_horizontal_pool_matches_pytorch_adaptive_pooling(height, k, mode):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(height * k).normal(size=(2, height, 3, 5)).astype(np.float32)
    pool = torch.nn.functional.adaptive_avg_pool2d if mode == "avg" else torch.nn.functional.adaptive_max_pool2d
    expected = pool(torch.from_numpy(x).permute(0, 3, 1, 2), (k, 1))[..., 0].permute(0, 2, 1).numpy()
    got = horizontal_pool(jnp.asarray(x), k, mode)
    chex.assert_shape(got, (2, k, 5))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_stripes_when_map_is_shorter_than_k():
    """64×32 input, last stride 1 -> 4 rows for 8 stripes: each row feeds two consecutive stripes."""
    assert stripe_bins(4, 8) == [(0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (3, 4), (3, 4)]
    assert stripe_bins(24, 8) == [(3 * i, 3 * i + 3) for i in range(8)]
    x = jnp.arange(2 * 4 * 2 * 3, dtype=jnp.float32).reshape(2, 4, 2, 3)
    row_means = x.mean(axis=2)  # [B, 4, C]
    np.testing.assert_allclose(horizontal_pool(x, 8, "avg"), jnp.repeat(row_means, 2, axis=1))


def test_tiny_forward_final_is_local_then_global():
    out, variables, _ = run(tiny_config(bn_neck=False))
    chex.assert_shape(
        [out.global_feat, out.local_feat, out.final_feat, out.logits], [(4, 16), (4, 8, 16), (4, 16 * 9), (4, 5)]
    )
    chex.assert_tree_all_finite(out)
    np.testing.assert_array_equal(
        out.final_feat, jnp.concatenate([out.local_feat.reshape(4, -1), out.global_feat], axis=-1)
    )
    assert float(out.local_feat.min()) >= 0.0  # ReLU after the local BN
    np.testing.assert_allclose(
        out.logits, out.final_feat @ variables["params"]["classifier"]["kernel"], rtol=1e-5, atol=1e-6
    )


def test_bn_neck_and_train_mode_statistics():
    out, variables, state = run(tiny_config(), train=True)
    assert "bias" not in variables["params"]["neck_bn"]
    concat = jnp.concatenate([out.local_feat.reshape(4, -1), out.global_feat], axis=-1)
    mean, var = concat.mean(0), concat.var(0)
    np.testing.assert_allclose(out.final_feat, (concat - mean) / jnp.sqrt(var + 1e-5), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(state["batch_stats"]["neck_bn"]["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
    assert set(state["batch_stats"]) == set(variables["batch_stats"])


@pytest.mark.parametrize(
    "branches,keys,final_dim", [("global", {"global", "final"}, 16), ("local", {"local", "final"}, 16 * 8)]
)
def test_single_branch_rows_of_table2(branches, keys, final_dim):
    out, variables, _ = run(tiny_config(branches=branches, bn_neck=False))
    assert isinstance(out, GLDFAOutput)
    feats = features_for_test(out)
    assert set(feats) == keys
    chex.assert_shape(feats["final"], (4, final_dim))
    missing = "local" if branches == "global" else "global"
    assert getattr(out, f"{missing}_feat") is None
    assert not any(name.startswith(missing) for name in variables["params"])


def test_plain_resnet_head_and_max_pooling_and_bfloat16():
    """embed_dim 0 keeps the backbone channels (plain ResNet rows of Table 2); bf16 outputs come back float32."""
    out, variables, _ = run(
        tiny_config(embed_dim=0, global_pool="max", local_pool="max", dtype="bfloat16", num_stripes=3)
    )
    channels = output_channels(18, 0.125)
    chex.assert_shape(
        [out.global_feat, out.local_feat, out.final_feat], [(4, channels), (4, 3, channels), (4, 4 * channels)]
    )
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(out))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
    assert "global_fc" not in variables["params"] and "local_conv" not in variables["params"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("branches", "both"),
        ("global_pool", "mean"),
        ("dtype", "float64"),
        ("depth", 152),
        ("num_stripes", 0),
        ("width_multiplier", 0.0),
    ],
)
def test_build_model_rejects_bad_config(field, value):
    with pytest.raises(ValueError, match=f"model.{field}"):
        build_model(tiny_config(**{field: value}), num_classes=5)


def test_local_relu_switch_gives_signed_stripes():
    with_relu, variables, _ = run(tiny_config(bn_neck=False))
    signed = build_model(tiny_config(bn_neck=False, local_relu=False), 5).apply(
        variables, jax.random.normal(jax.random.PRNGKey(1), (4, 64, 32, 3)), train=False
    )
    assert float(with_relu.local_feat.min()) >= 0.0
    assert float(signed.local_feat.min()) < 0.0  # the BN output, like the global feature
    np.testing.assert_array_equal(with_relu.global_feat, signed.global_feat)  # the switch touches local only


class _Device:
    def __init__(self, platform, compute_capability=None):
        self.platform, self.compute_capability = platform, compute_capability


@pytest.mark.parametrize(
    "device, want",
    [
        (_Device("cpu"), jnp.float32),
        (_Device("gpu", "7.5"), jnp.float16),  # T4: bfloat16 is emulated, float16 native (with loss scaling)
        (_Device("gpu", "7.0"), jnp.float16),  # V100
        (_Device("gpu", "8.0"), jnp.bfloat16),
        (_Device("gpu", "9.0"), jnp.bfloat16),
        (_Device("tpu"), jnp.bfloat16),
    ],
)
def test_auto_dtype_is_bfloat16_where_native_float16_on_older_gpus(device, want):
    assert compute_dtype("auto", device) == want
    assert compute_dtype("float32", device) == jnp.float32


def test_default_dtype_on_this_cpu_is_float32():
    assert get_config().model.dtype == "auto"
    assert build_model(get_config().model, 3).dtype == jnp.float32


def test_id_feature_global_classifies_the_global_feature_only():
    """model.id_feature="global" (AlignedReID): the classifier sees the BN-necked global feature, so the stripes
    get no ID-loss gradient; "final" stays the concatenation of stripes and global."""
    config = tiny_config(id_feature="global")
    (out, variables, _), x = run(config), jax.random.normal(jax.random.PRNGKey(1), (4, 64, 32, 3))
    chex.assert_shape([out.final_feat, out.logits], [(4, 16 * 9), (4, 5)])
    assert variables["params"]["neck_bn"]["scale"].shape == (16,)
    np.testing.assert_array_equal(out.final_feat[:, -16:], out.global_feat)
    model = build_model(config, 5)

    def id_logits_sum(params):
        return jnp.sum(model.apply({**variables, "params": params}, x).logits)

    grads = jax.grad(id_logits_sum)(variables["params"])
    assert not np.any(grads["local_conv"]["kernel"]) and np.any(grads["global_fc"]["kernel"])
    with pytest.raises(ValueError, match="model.id_feature='global' needs the global branch"):
        build_model(tiny_config(id_feature="global", branches="local"), 5)
    with pytest.raises(ValueError, match=r"model.id_feature='stripes' is not supported"):
        build_model(tiny_config(id_feature="stripes"), 5)


def test_auto_on_a_t4_trains_float16_with_loss_scaling(monkeypatch):
    from gldfa_jax import train

    monkeypatch.setattr(jax, "local_devices", lambda: [_Device("gpu", "7.5")])
    config = get_config()
    model = build_model(config.model, 3)
    assert model.dtype == jnp.float16
    assert train.loss_scale_for(config, model) == config.train.loss_scale_init == 2.0**15
