"""Trainer: step-decay schedule, the data-parallel step (2 devices == 1 device == plain gradient), non-finite loss."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import base
from gldfa_jax import losses, train
from gldfa_jax.model import build_model


def tiny_config():
    c = base.get_config()
    c.data.height, c.data.width = 64, 32
    c.data.num_identities, c.data.num_instances = 4, 2
    c.model.depth, c.model.width_multiplier, c.model.embed_dim, c.model.num_stripes = 18, 0.125, 16, 4
    return c


def test_schedule_boundaries_in_epochs():
    o = base.get_config().optim  # §4.1: 3.5e-3, ×0.1 at 100 and 200
    spe = 7
    lr = train.lr_schedule(o, spe)
    expect = {0: 3.5e-3, 100 * spe - 1: 3.5e-3, 100 * spe: 3.5e-4, 200 * spe - 1: 3.5e-4, 200 * spe: 3.5e-5,
              300 * spe - 1: 3.5e-5}
    for step, value in expect.items():
        assert float(lr(step)) == pytest.approx(value, rel=1e-6), step


def test_warmup_is_linear_then_joins_decay():
    o = base.get_config().optim
    o.warmup_epochs, o.warmup_factor, o.decay_epochs = 2, 0.1, (3,)
    lr = train.lr_schedule(o, 5)  # warm-up over 10 steps from 0.1·lr
    assert float(lr(0)) == pytest.approx(3.5e-4)
    assert float(lr(5)) == pytest.approx(3.5e-3 * (0.1 + 0.9 * 0.5))
    assert float(lr(10)) == pytest.approx(3.5e-3)
    assert float(lr(15)) == pytest.approx(3.5e-4)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train.lr_schedule(o, 0)


def test_optimizer_is_adam_with_l2_added_to_gradient():
    o = base.get_config().optim
    tx = train.make_optimizer(o, 10)
    params = {"w": jnp.array([1.0, -2.0])}
    zero = {"w": jnp.zeros(2)}
    updates, _ = tx.update(zero, tx.init(params), params)
    # With a zero loss gradient Adam sees only g = wd·w, so its first step is -lr·g/(|g| + eps) ≈ -lr·sign(w) (PyTorch Adam's
    # weight_decay); decoupled AdamW would instead move by -lr·wd·w ≈ 0.
    g = 1e-5 * np.array([1.0, -2.0])
    np.testing.assert_allclose(updates["w"], -3.5e-3 * g / (np.abs(g) + 1e-8), rtol=1e-4)


def test_shard_batch_rejects_uneven_split():
    with pytest.raises(ValueError, match="does not split"):
        train.shard_batch(np.zeros((5, 2)), 2)


@pytest.fixture(scope="module")
def setup():
    c = tiny_config()
    num_classes = 4
    model = build_model(c.model, num_classes, axis_name=train.AXIS)
    tx = optax.sgd(1.0)  # update = -gradient: compares gradients directly (Adam's first step is ~sign(g))
    shape = (c.data.height, c.data.width, 3)
    variables = train.init_variables(model, jax.random.PRNGKey(0), shape)
    state = train.create_train_state(model, tx, variables, num_classes, jax.random.PRNGKey(1), shape)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8,) + shape).astype(np.float32)
    labels = np.repeat(np.arange(4), 2).astype(np.int32)
    step = train.data_parallel(train.make_train_step(model, tx, c))
    return c, model, tx, state, images, labels, step


def _run(setup, n, state=None):
    c, model, tx, state0, images, labels, step = setup
    new, metrics = step(train.replicate(state if state is not None else state0, n),
                        train.shard_batch(images, n), train.shard_batch(labels, n))
    return train.unreplicate(new), train.unreplicate(metrics)


def _reference(setup):
    """The update written without any device mapping: one global batch, BN over it, plain gradients."""
    c, _, tx, state, images, labels, _ = setup
    model = build_model(c.model, 4)

    def loss_fn(params, centers):
        out, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, images, train=True,
                                    mutable=["batch_stats"])
        loss, parts = losses.total_loss(out, labels, centers, c.loss, c.model.num_stripes)
        return loss, new_vars["batch_stats"]

    (loss, stats), (gp, gc) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(state.params, state.centers)
    updates, _ = tx.update(gp, state.opt_state, state.params)
    centers = jax.tree.map(lambda x, g: x - c.loss.center_lr * g / c.loss.center_weight, state.centers, gc)
    return optax.apply_updates(state.params, updates), stats, centers, float(loss)


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs XLA_FLAGS host device count 2 (conftest)")
def test_two_device_step_equals_one_device_and_reference(setup):
    one, m1 = _run(setup, 1)
    two, m2 = _run(setup, 2)
    params, stats, centers, loss = _reference(setup)
    assert int(one.step) == int(two.step) == 1
    assert m1["total"] == pytest.approx(loss, rel=1e-5) and m2["total"] == pytest.approx(loss, rel=1e-5)
    for got in (one, two):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got.params, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got.batch_stats, stats)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got.centers, centers)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), one.params, setup[3].params))
    assert max(changed) > 1e-4  # the step did update


def test_non_finite_loss_leaves_state_unchanged(setup):
    state = setup[3]
    bad = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    new, metrics = _run(setup, 1, bad)
    assert metrics["finite"] == 0.0
    assert int(new.step) == 0
    np.testing.assert_array_equal(new.centers["global"], np.asarray(state.centers["global"]))


def test_bfloat16_step_keeps_float32_params_and_tracks_the_float32_loss(setup):
    c, _, tx, state, images, labels, _ = setup
    c16 = tiny_config()
    c16.model.dtype = "bfloat16"
    model16 = build_model(c16.model, 4, axis_name=train.AXIS)
    step16 = train.data_parallel(train.make_train_step(model16, tx, c16))
    new, metrics = step16(train.replicate(state, 1), train.shard_batch(images, 1), train.shard_batch(labels, 1))
    new, metrics = train.unreplicate(new), train.unreplicate(metrics)
    _, _, _, loss32 = _reference(setup)
    assert metrics["finite"] == 1.0 and int(new.step) == 1
    assert metrics["total"] == pytest.approx(loss32, rel=0.05)  # bfloat16 compute, same loss to its precision
    assert {x.dtype for x in jax.tree.leaves(new.params)} == {np.dtype(np.float32)}
