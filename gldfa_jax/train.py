"""Training state, optimiser and the data-parallel train step (paper §4.1); the loop is gldfa_jax.loop.

The per-device step runs under `parallel.data_parallel` (jax.pmap over the axis AXIS): every device holds a replica of
the TrainState and one shard of the global P×K batch. Features are all-gathered so that the losses (triplet
mining, centre loss, ID loss) see the whole global batch exactly as the paper's single-GPU batch of 32 does,
BatchNorm statistics are computed over the global batch (the model's BN layers take `axis_name=AXIS`), and
gradients are averaged with pmean. One device or N devices therefore give the same update.

With several processes (jax.distributed, one per host) the axis spans every process's devices, host by host: each
process feeds its local devices its own slice of the global batch, and the update is the same as on one host.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from data_pipelines.augment import augment_batch, augment_params
from gldfa_jax import loss_scale, losses
from gldfa_jax.model import GLDFAOutput
from gldfa_jax.parallel import AXIS

# ---------------------------------------------------------------- optimiser


def lr_schedule(optim_config, steps_per_epoch: int, xp=jnp) -> Callable[[Any], Any]:
    """Step decay in epochs (§4.1: lr for epochs [0, 100), ×0.1 from 100, ×0.01 from 200) as a function of the
    update count, with an optional linear warm-up over `optim.warmup_epochs` from
    `optim.warmup_factor` (default 0.01) × lr. `xp=np` gives the same rule on the host, so logging the learning
    rate never waits for the device; the decay is optax.piecewise_constant_schedule's arithmetic."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch} must be >= 1.")
    boundaries = sorted({int(e) * steps_per_epoch for e in optim_config.decay_epochs})
    warmup_steps = int(round(optim_config.warmup_epochs * steps_per_epoch))
    lr, factor, start = optim_config.lr, optim_config.decay_factor, optim_config.warmup_factor

    def schedule(count):
        value = lr
        for threshold in boundaries:
            before = xp.maximum(0.0, xp.sign(threshold - count))
            value = value * before + (1 - before) * factor * value
        if warmup_steps > 0:
            value = value * (start + (1.0 - start) * xp.minimum(count / warmup_steps, 1.0))
        return value

    return schedule


def make_optimizer(
    optim_config, steps_per_epoch: int, loss_scale_init: float | None = None
) -> optax.GradientTransformation:
    """Adam with PyTorch's `weight_decay` semantics (§4.1: 1e-5): L2 added to the gradient before Adam.
    `loss_scale_init` (float16 compute, see `loss_scale_for`) puts a dynamic loss scale first in the chain."""
    adam = (
        optax.add_decayed_weights(optim_config.weight_decay),
        optax.scale_by_adam(),
        optax.scale_by_learning_rate(lr_schedule(optim_config, steps_per_epoch)),
    )
    return optax.chain(*((loss_scale.holder(loss_scale_init),) if loss_scale_init else ()), *adam)


def loss_scale_for(config, model) -> float | None:
    """`train.loss_scale_init` when the model computes in float16 (its gradients need scaling), else None."""
    return float(config.train.loss_scale_init) if model.dtype == jnp.float16 else None


# ---------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. Per-step randomness is fold_in(rng, step), so restoring
    (step, rng) restores the random stream."""

    step: jax.Array  # [] int32: updates done
    params: Any
    batch_stats: Any
    opt_state: Any
    centers: Any  # centre-loss centres (eq. 9), updated by their own SGD rule
    rng: jax.Array  # [2] uint32: base key of the augmentation stream


def init_variables(model, rng: jax.Array, image_shape) -> dict:
    """Model variables {"params", "batch_stats"} for images of shape (H, W, 3)."""
    return jax.jit(lambda r: model.init(r, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False))(rng)


def create_train_state(model, tx, variables: dict, num_classes: int, rng: jax.Array, image_shape) -> TrainState:
    """Fresh TrainState from model variables (random or pretrained), built on the default device."""
    output = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False), variables
    )

    def build(variables, rng):
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(variables["params"]),
            centers=losses.init_centers(num_classes, output),
            rng=jnp.asarray(rng, jnp.uint32),
        )

    return jax.jit(build)(jax.device_put(variables), jax.device_put(rng))


def state_template(model, tx, num_classes: int, image_shape) -> TrainState:
    """The TrainState's shapes and dtypes without computing it: what restoring a checkpoint needs."""

    def build():
        rng = jax.random.PRNGKey(0)  # traced: no host->device transfer
        return create_train_state(model, tx, init_variables(model, rng, image_shape), num_classes, rng, image_shape)

    return jax.eval_shape(build)


# ---------------------------------------------------------------- step


def _gather_output(output: GLDFAOutput) -> GLDFAOutput:
    """Per-device output [b, ...] -> the global batch's [B, ...] on every device (float32 for the losses)."""
    return jax.tree.map(lambda x: jax.lax.all_gather(x.astype(jnp.float32), AXIS, tiled=True), output)


def make_train_step(model, tx, config) -> Callable:
    """Per-device step (state, images [b, H, W, 3] float32, labels [b] int32) -> (state, metrics).

    `model` must be built with axis_name=AXIS (synchronised BatchNorm). Run it through `parallel.data_parallel`.
    A non-finite loss leaves the state unchanged and reports metrics["finite"] = 0 so the caller can stop.
    With a loss scale in the optimiser state (float16), gradients that overflow skip the update (the step still
    counts, so the data stream moves on) and lower the scale: metrics["skipped"] = 1, never a NaN in the state.
    """
    loss_config = losses.LossOptions.from_config(config)
    num_stripes = config.model.num_stripes

    def loss_fn(params, centers, batch_stats, images, labels, scale):
        output, new_vars = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        loss, parts = losses.total_loss(
            _gather_output(output), jax.lax.all_gather(labels, AXIS, tiled=True), centers, loss_config, num_stripes
        )
        return loss if scale is None else loss * scale, (loss, parts, new_vars["batch_stats"])

    def step(state: TrainState, images, labels):
        scaler = loss_scale.find(state.opt_state)
        scale = None if scaler is None else scaler.scale
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (_, (loss, parts, batch_stats)), grads = grad_fn(
            state.params, state.centers, state.batch_stats, images, labels, scale
        )
        # Every device evaluated the same global loss; the all_gather transpose summed the feature gradients
        # over devices, so the mean over devices is the gradient of the global loss.
        g_params, g_centers = jax.lax.pmean(grads, AXIS)
        if scaler is not None:
            g_params, g_centers = jax.tree.map(lambda g: g / scale, (g_params, g_centers))
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        new = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=jax.lax.pmean(batch_stats, AXIS),
            opt_state=opt_state,
            centers=losses.update_centers(state.centers, g_centers, loss_config.center_lr, loss_config.center_weight),
        )
        finite = jnp.isfinite(loss)
        metrics = {**parts, "finite": finite.astype(jnp.float32)}
        if scaler is None:
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state), metrics
        grads_finite = loss_scale.all_finite((g_params, g_centers))
        new = jax.tree.map(lambda n, o: jnp.where(finite & grads_finite, n, o), new, state)
        scaler = loss_scale.adjust(scaler, grads_finite, config.train.loss_scale_period)
        new = new.replace(
            step=jnp.where(finite, state.step + 1, state.step), opt_state=loss_scale.with_state(new.opt_state, scaler)
        )
        skipped = (finite & ~grads_finite).astype(jnp.float32)
        return new, {**metrics, "skipped": skipped, "loss_scale": scaler.scale}  # the scale of the next step

    return step


def make_batch_step(model, tx, config, hosts: int = 1) -> Callable:
    """Per-device (state, images uint8 [N, H, W, 3], labels [N] int32, order [R, B] int32) -> (state, metrics):
    gather + augmentation + train step as one compiled call.

    The step's batch is row `state.step % R` of `order` (indices into images/labels): with the whole training
    set on the device `order` is an epoch's index table (R = steps per epoch) and nothing crosses per step;
    when streaming, images/labels are the step's own batch and order is [[0, ..., B-1]]. B is this process's part
    of the global batch (`hosts` processes, host h holding rows h·B .. h·B + B - 1). Every device augments the
    whole global batch with the step's key, other hosts' rows as zeros (an image's augmentation depends on its own
    pixels and its row's random draws only), and keeps its own slice, so the random stream (and the update) is
    the same for any number of devices and processes. The program is the same in every process (the host comes
    from the device's axis index), so all of them share one compilation cache entry.
    """
    step_fn = make_train_step(model, tx, config)
    params = augment_params(config.data)

    def step(state: TrainState, images, labels, order):
        idx = order[state.step % order.shape[0]]
        b = idx.shape[0]
        size = b * hosts // jax.lax.axis_size(AXIS)
        first = jax.lax.axis_index(AXIS) * size  # this device's slice of the global batch (pmap orders the axis
        mine = first - first % b  # host by host), and where this host's rows start in it
        rows = jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros((hosts * b,) + images.shape[1:], images.dtype), images[idx], mine, 0
        )
        batch = augment_batch(jax.random.fold_in(state.rng, state.step), rows, params)
        return step_fn(
            state,
            jax.lax.dynamic_slice_in_dim(batch, first, size),
            jax.lax.dynamic_slice_in_dim(labels[idx], first - mine, size),
        )

    return step


def scaled_for_devices(config, num_devices: int):
    """The config a run on `num_devices` devices trains with: unchanged, or with `train.batch_per_device` P × devices
    identities per batch (K images each, so P×K per device) and, with `train.scale_lr`, lr × devices."""
    if not config.train.batch_per_device:
        if config.train.scale_lr:
            raise ValueError("train.scale_lr=True needs train.batch_per_device=True (the batch it scales with).")
        return config
    config = config.copy_and_resolve_references()
    config.data.num_identities *= num_devices
    if config.train.scale_lr:
        config.optim.lr *= num_devices
    return config
