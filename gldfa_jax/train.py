"""Training state, optimiser and the data-parallel train step (paper §4.1; issue 3 items 5-6).

The per-device step runs under `data_parallel` (jax.pmap over the axis AXIS): every device holds a replica of
the TrainState and one shard of the global P×K batch. Features are all-gathered so that the losses (triplet
mining, centre loss, ID loss) see the whole global batch exactly as the paper's single-GPU batch of 32 does,
BatchNorm statistics are computed over the global batch (the model's BN layers take `axis_name=AXIS`), and
gradients are averaged with pmean. One device or N devices therefore give the same update.
"""
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gldfa_jax import losses
from gldfa_jax.model import GLDFAOutput

AXIS = "batch"  # the named device axis of the data-parallel step


def data_parallel(fn: Callable, donate_argnums=()) -> Callable:
    """Map a per-device function over all local devices on the axis AXIS.

    The single place where data parallelism is expressed: inputs carry a leading device axis
    ([n, ...], see `replicate` / `shard_batch`; pmap uses the first n devices); collectives inside `fn` name AXIS. Moving to
    `jax.shard_map` over a mesh means changing only this function and those two helpers.
    """
    return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums)


def num_devices() -> int:
    return jax.local_device_count()


def _device_axis_sharding(n: int) -> jax.sharding.NamedSharding:
    # The layout pmap gives its outputs: placing inputs the same way avoids a second compilation.
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:n]), (AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def replicate(tree: Any, n: int | None = None) -> Any:
    """Host pytree -> the same pytree with a leading axis of n (default: all local devices) replicas."""
    n = n or num_devices()
    sharding = _device_axis_sharding(n)
    return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * n), sharding), tree)


def unreplicate(tree: Any) -> Any:
    """Replicated pytree -> host numpy copy of device 0's replica."""
    return jax.tree.map(lambda x: np.asarray(x[0]), tree)


def shard_batch(x, n: int | None = None):
    """[B, ...] -> [n, B / n, ...] (n default: all local devices); B must split evenly over the devices."""
    n = n or num_devices()
    if x.shape[0] % n:
        raise ValueError(f"global batch size {x.shape[0]} does not split over {n} devices; choose "
                         f"data.num_identities × data.num_instances divisible by {n}.")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])


# ---------------------------------------------------------------- optimiser


def lr_schedule(optim_config, steps_per_epoch: int) -> Callable[[Any], jax.Array]:
    """Step decay in epochs (§4.1: lr for epochs [0, 100), ×0.1 from 100, ×0.01 from 200) as a function of the
    update count, with an optional linear warm-up over `optim.warmup_epochs` from
    `optim.warmup_factor` (default 0.01) × lr."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch} must be >= 1.")
    decay = optax.piecewise_constant_schedule(
        optim_config.lr, {int(e) * steps_per_epoch: optim_config.decay_factor for e in optim_config.decay_epochs})
    warmup_steps = int(round(optim_config.warmup_epochs * steps_per_epoch))
    if warmup_steps <= 0:
        return decay
    start = optim_config.warmup_factor

    def schedule(count):
        ramp = start + (1.0 - start) * jnp.minimum(count / warmup_steps, 1.0)
        return decay(count) * ramp

    return schedule


def make_optimizer(optim_config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with PyTorch's `weight_decay` semantics (§4.1: 1e-5): L2 added to the gradient before Adam."""
    return optax.chain(
        optax.add_decayed_weights(optim_config.weight_decay),
        optax.scale_by_adam(),
        optax.scale_by_learning_rate(lr_schedule(optim_config, steps_per_epoch)),
    )


# ---------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. Per-step randomness is fold_in(rng, step), so restoring
    (step, rng) restores the random stream."""
    step: jax.Array       # [] int32: updates done
    params: Any
    batch_stats: Any
    opt_state: Any
    centers: Any          # centre-loss centres (eq. 9), updated by their own SGD rule
    rng: jax.Array        # [2] uint32: base key of the augmentation stream


def init_variables(model, rng: jax.Array, image_shape) -> dict:
    """Model variables {"params", "batch_stats"} for images of shape (H, W, 3)."""
    return jax.jit(lambda r: model.init(r, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False))(rng)


def create_train_state(model, tx, variables: dict, num_classes: int, rng: jax.Array, image_shape) -> TrainState:
    """Fresh TrainState from model variables (random or pretrained)."""
    output = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                                                  train=False), variables)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
                      centers=losses.init_centers(num_classes, output), rng=jnp.asarray(rng, jnp.uint32))


# ---------------------------------------------------------------- step


def _gather_output(output: GLDFAOutput) -> GLDFAOutput:
    """Per-device output [b, ...] -> the global batch's [B, ...] on every device (float32 for the losses)."""
    return jax.tree.map(lambda x: jax.lax.all_gather(x.astype(jnp.float32), AXIS, tiled=True), output)


def make_train_step(model, tx, config) -> Callable:
    """Per-device step (state, images [b, H, W, 3] float32, labels [b] int32) -> (state, metrics).

    `model` must be built with axis_name=AXIS (synchronised BatchNorm). Run it through `data_parallel`.
    A non-finite loss leaves the state unchanged and reports metrics["finite"] = 0 so the caller can stop.
    """
    loss_config = config.loss
    num_stripes = config.model.num_stripes

    def loss_fn(params, centers, batch_stats, images, labels):
        output, new_vars = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                       mutable=["batch_stats"])
        loss, parts = losses.total_loss(_gather_output(output), jax.lax.all_gather(labels, AXIS, tiled=True),
                                        centers, loss_config, num_stripes)
        return loss, (parts, new_vars["batch_stats"])

    def step(state: TrainState, images, labels):
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (loss, (parts, batch_stats)), (g_params, g_centers) = grad_fn(
            state.params, state.centers, state.batch_stats, images, labels)
        # Every device evaluated the same global loss; the all_gather transpose summed the feature gradients
        # over devices, so the mean over devices is the gradient of the global loss.
        g_params, g_centers = jax.lax.pmean((g_params, g_centers), AXIS)
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        new = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=jax.lax.pmean(batch_stats, AXIS),
            opt_state=opt_state,
            centers=losses.update_centers(state.centers, g_centers, loss_config.center_lr, loss_config.center_weight),
        )
        finite = jnp.isfinite(loss)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {**parts, "finite": finite.astype(jnp.float32)}
        return new, metrics

    return step


# ---------------------------------------------------------------- loop


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the state was not updated and no checkpoint was written for it."""


def steps_per_epoch(config, sampler) -> int:
    """`train.steps_per_epoch`, or one pass of the P×K sampler (strong-baseline epoch) when 0."""
    return int(config.train.steps_per_epoch) or int(sampler.num_batches)


def epoch_batches(sampler, epoch: int, num_steps: int) -> np.ndarray:
    """Index batches [num_steps, P*K] of `epoch`: the sampler's order, cycled if the epoch is set longer."""
    order = np.asarray(sampler.epoch(epoch))
    if len(order) < num_steps:
        order = np.resize(order, (num_steps, order.shape[1]))
    return order[:num_steps]


def _is_due(epoch: int, every: int, last: int) -> bool:
    return epoch == last or (every > 0 and (epoch + 1) % every == 0)


def train_and_evaluate(config, workdir: str, data, writer=None) -> dict:
    """Train on data.train (resuming from workdir's latest checkpoint), evaluate on query/gallery periodically
    and at the end; returns the final results dict (gldfa_jax.inference)."""
    from absl import logging
    from tqdm import tqdm

    from data_pipelines.augment import augment_batch
    from data_pipelines.sampler import PKSampler
    from gldfa_jax import checkpointing, inference, pretrained
    from gldfa_jax.model import build_model

    t, d = config.train, config.data
    sampler = PKSampler(data.train.pids, d.num_identities, d.num_instances, config.seed)
    spe = steps_per_epoch(config, sampler)
    batch = d.num_identities * d.num_instances
    model = build_model(config.model, data.num_classes, axis_name=AXIS)
    tx = make_optimizer(config.optim, spe)
    schedule = lr_schedule(config.optim, spe)
    image_shape = (d.height, d.width, 3)
    init_rng, aug_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = init_variables(model, init_rng, image_shape)

    store = checkpointing.CheckpointStore(workdir, t.keep_checkpoints)
    store.save_config(config)
    template = create_train_state(model, tx, variables, data.num_classes, aug_rng, image_shape)
    if store.latest_step() is not None:
        state, meta = checkpointing.restore(store.latest, template)
        if meta["steps_per_epoch"] != spe:
            raise ValueError(f"checkpoint in {store.directory} used {meta['steps_per_epoch']} steps per epoch, "
                             f"this config gives {spe}; use a fresh --workdir or the original config.")
        logging.info("resuming from step %d (epoch %d)", meta["step"], meta["step"] // spe)
    else:
        if config.model.pretrained:
            variables = pretrained.load_pretrained(config.model.pretrained, variables)
        else:
            logging.info("model.pretrained is empty: training starts from scratch (random initialisation)")
        state = create_train_state(model, tx, variables, data.num_classes, aug_rng, image_shape)
    start = int(state.step)
    best_map = store.best_map()

    p_step = data_parallel(make_train_step(model, tx, config), donate_argnums=(0,))
    augment = jax.jit(lambda key, x: augment_batch(key, x, d))
    state = replicate(state)
    host, hosts = jax.process_index(), jax.process_count()
    per_host = batch // hosts
    results = {}
    best_mode = config.eval.best_mode

    def evaluate(epoch, host_state):
        variables = {"params": host_state.params, "batch_stats": host_state.batch_stats}
        q_feats, g_feats = inference.split_features(model, variables, data.query, data.gallery, config)
        res = inference.evaluate_features(q_feats, g_feats, data.query, data.gallery, config)
        if writer:
            for mode, r in res.items():
                writer.write(int(host_state.step), f"eval/{mode}", r)
            writer.flush()
        logging.info("epoch %d evaluation:\n%s", epoch + 1, inference.format_table(res))
        if epoch == t.epochs - 1:  # after the metrics are flushed, so the curves include this evaluation
            write_reports(workdir, q_feats, g_feats, data, config, spe)
        return res

    for epoch in range(start // spe, t.epochs):
        order = epoch_batches(sampler, epoch, spe)
        first = start - epoch * spe if epoch == start // spe else 0
        bar = tqdm(range(first, spe), desc=f"epoch {epoch + 1}/{t.epochs}", unit="step", leave=False,
                   initial=first, total=spe)
        for i in bar:
            step = epoch * spe + i
            idx = order[i][host * per_host:(host + 1) * per_host]  # multi-host: this process's slice
            tic = time.perf_counter()
            key = jax.random.fold_in(jnp.asarray(aug_rng, jnp.uint32), step)
            if hosts > 1:
                key = jax.random.fold_in(key, host)
            images = augment(key, jnp.asarray(data.train.images[idx]))
            labels = data.train.pids[idx].astype(np.int32)
            state, metrics = p_step(state, shard_batch(images), shard_batch(labels))  # images stay on device
            metrics = {k: float(v[0]) for k, v in metrics.items()}
            rate = batch / (time.perf_counter() - tic)
            if not metrics.pop("finite"):
                store.wait()
                raise NonFiniteLossError(
                    f"loss became non-finite at epoch {epoch + 1}, step {step} ({metrics}); stopped without "
                    f"saving, the last good checkpoint (step {store.latest_step()}) is kept in {store.directory}. "
                    f"Try a lower optim.lr or a warm-up (optim.warmup_epochs).")
            lr = float(schedule(step))
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()} | {"lr": f"{lr:.2e}", "img/s": f"{rate:.1f}"})
            if writer and (step % t.log_every == 0 or i == spe - 1):
                writer.write(step + 1, "train", {**metrics, "lr": lr, "images_per_s": rate})
            every = t.checkpoint_every_steps
            if every and (step + 1) % every == 0 and i < spe - 1:
                store.save(unreplicate(state), _meta(step + 1, spe))
        bar.close()
        host_state, evaluated = unreplicate(state), None
        if _is_due(epoch, t.eval_every, t.epochs - 1):
            results = evaluated = evaluate(epoch, host_state)
            score = results.get(best_mode, next(iter(results.values())))["mAP"]
            if score > best_map:
                best_map = score
                store.save(host_state, _meta((epoch + 1) * spe, spe, results), best_map=best_map)
        if _is_due(epoch, t.checkpoint_every, t.epochs - 1):
            store.save(host_state, _meta((epoch + 1) * spe, spe, evaluated))
        if writer:
            writer.flush()
    if not results:  # resumed after the last epoch had finished: evaluate the restored final state
        results = evaluate(t.epochs - 1, unreplicate(state))
    store.wait()
    store.close()
    return results


def write_reports(workdir: str, q_feats: dict, g_feats: dict, data, config, spe: int) -> None:
    """The PNG reports of an evaluation (retrieval grid, stripe alignment, CMC, training curves) in WORKDIR/reports."""
    from absl import logging

    from gldfa_jax import reports

    if jax.process_index() != 0:
        return
    out = os.path.join(workdir, "reports")
    os.makedirs(out, exist_ok=True)
    paths = reports.write_eval_reports(out, q_feats, g_feats, data.query, data.gallery, config,
                                       metrics_jsonl=os.path.join(workdir, "metrics.jsonl"), steps_per_epoch=spe)
    logging.info("reports: %s", ", ".join(sorted(paths.values())))


def _meta(step: int, spe: int, results=None) -> dict:
    return {"step": int(step), "epoch": int(step // spe), "steps_per_epoch": int(spe), "results": results}
