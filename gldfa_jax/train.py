"""Training state, optimiser and the data-parallel train step (paper §4.1; issue 3 items 5-6).

The per-device step runs under `data_parallel` (jax.pmap over the axis AXIS): every device holds a replica of
the TrainState and one shard of the global P×K batch. Features are all-gathered so that the losses (triplet
mining, centre loss, ID loss) see the whole global batch exactly as the paper's single-GPU batch of 32 does,
BatchNorm statistics are computed over the global batch (the model's BN layers take `axis_name=AXIS`), and
gradients are averaged with pmean. One device or N devices therefore give the same update.

With several processes (jax.distributed, one per host) the axis spans every process's devices, host by host: each
process feeds its local devices its own slice of the global batch, and the update is the same as on one host.
"""
import collections
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from data_pipelines.augment import augment_batch
from gldfa_jax import loss_scale, losses
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
    """Host (or device) pytree -> the same pytree with a leading axis of n (default: all local devices) replicas,
    one per device (explicit transfers; no n-fold copy on the host)."""
    n = n or num_devices()
    sharding, devices = _device_axis_sharding(n), jax.local_devices()[:n]

    def put(x):
        x = np.asarray(jax.device_get(x))[None]
        return jax.make_array_from_single_device_arrays((n,) + x.shape[1:], sharding,
                                                        [jax.device_put(x, d) for d in devices])

    return jax.tree.map(put, tree)


def first_replica(tree: Any) -> Any:
    """Replicated pytree -> device 0's replica, still on device 0 (no transfer)."""
    return jax.tree.map(lambda x: jax.lax.squeeze(x.addressable_shards[0].data, (0,)), tree)


def unreplicate(tree: Any) -> Any:
    """Replicated pytree -> host numpy copy of device 0's replica."""
    return jax.device_get(first_replica(tree))


def shard_batch(x, n: int | None = None):
    """[B, ...] -> [n, B / n, ...] (n default: all local devices); B must split evenly over the devices."""
    n = n or num_devices()
    if x.shape[0] % n:
        raise ValueError(f"global batch size {x.shape[0]} does not split over {n} devices; choose "
                         f"data.num_identities × data.num_instances divisible by {n}.")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])


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


def make_optimizer(optim_config, steps_per_epoch: int, loss_scale_init: float | None = None
                   ) -> optax.GradientTransformation:
    """Adam with PyTorch's `weight_decay` semantics (§4.1: 1e-5): L2 added to the gradient before Adam.
    `loss_scale_init` (float16 compute, see `loss_scale_for`) puts a dynamic loss scale first in the chain."""
    adam = (optax.add_decayed_weights(optim_config.weight_decay),
            optax.scale_by_adam(),
            optax.scale_by_learning_rate(lr_schedule(optim_config, steps_per_epoch)))
    return optax.chain(*((loss_scale.holder(loss_scale_init),) if loss_scale_init else ()), *adam)


def loss_scale_for(config, model) -> float | None:
    """`train.loss_scale_init` when the model computes in float16 (its gradients need scaling), else None."""
    return float(config.train.loss_scale_init) if model.dtype == jnp.float16 else None


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
    """Fresh TrainState from model variables (random or pretrained), built on the default device."""
    output = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                                                  train=False), variables)

    def build(variables, rng):
        return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
                          centers=losses.init_centers(num_classes, output), rng=jnp.asarray(rng, jnp.uint32))

    return jax.jit(build)(jax.device_put(variables), jax.device_put(rng))


# ---------------------------------------------------------------- step


def _gather_output(output: GLDFAOutput) -> GLDFAOutput:
    """Per-device output [b, ...] -> the global batch's [B, ...] on every device (float32 for the losses)."""
    return jax.tree.map(lambda x: jax.lax.all_gather(x.astype(jnp.float32), AXIS, tiled=True), output)


def make_train_step(model, tx, config) -> Callable:
    """Per-device step (state, images [b, H, W, 3] float32, labels [b] int32) -> (state, metrics).

    `model` must be built with axis_name=AXIS (synchronised BatchNorm). Run it through `data_parallel`.
    A non-finite loss leaves the state unchanged and reports metrics["finite"] = 0 so the caller can stop.
    With a loss scale in the optimiser state (float16), gradients that overflow skip the update (the step still
    counts, so the data stream moves on) and lower the scale: metrics["skipped"] = 1, never a NaN in the state.
    """
    loss_config = config.loss
    num_stripes = config.model.num_stripes

    def loss_fn(params, centers, batch_stats, images, labels, scale):
        output, new_vars = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                       mutable=["batch_stats"])
        loss, parts = losses.total_loss(_gather_output(output), jax.lax.all_gather(labels, AXIS, tiled=True),
                                        centers, loss_config, num_stripes)
        return loss if scale is None else loss * scale, (loss, parts, new_vars["batch_stats"])

    def step(state: TrainState, images, labels):
        scaler = loss_scale.find(state.opt_state)
        scale = None if scaler is None else scaler.scale
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (_, (loss, parts, batch_stats)), grads = grad_fn(
            state.params, state.centers, state.batch_stats, images, labels, scale)
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
        new = new.replace(step=jnp.where(finite, state.step + 1, state.step),
                          opt_state=loss_scale.with_state(new.opt_state, scaler))
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

    def step(state: TrainState, images, labels, order):
        idx = order[state.step % order.shape[0]]
        b = idx.shape[0]
        size = b * hosts // jax.lax.axis_size(AXIS)
        first = jax.lax.axis_index(AXIS) * size  # this device's slice of the global batch (pmap orders the axis
        mine = first - first % b                  # host by host), and where this host's rows start in it
        rows = jax.lax.dynamic_update_slice_in_dim(jnp.zeros((hosts * b,) + images.shape[1:], images.dtype),
                                                   images[idx], mine, 0)
        batch = augment_batch(jax.random.fold_in(state.rng, state.step), rows, config.data)
        return step_fn(state, jax.lax.dynamic_slice_in_dim(batch, first, size),
                       jax.lax.dynamic_slice_in_dim(labels[idx], first - mine, size))

    return step


# ---------------------------------------------------------------- loop


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the state was not updated and no checkpoint was written for it."""


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


def images_on_device(config, nbytes: int) -> bool:
    """Whether the uint8 training set lives in device memory (`train.image_store`): "device", "host", or "auto"
    = device when it takes at most `train.device_image_fraction` of the first device's memory (CPU: host)."""
    store = config.train.image_store
    if store not in ("auto", "device", "host"):
        raise ValueError(f"train.image_store={store!r}; choose 'auto', 'device' or 'host'.")
    if store != "auto":
        return store == "device"
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return False  # device memory is host memory: a second copy gains nothing
    limit = (device.memory_stats() or {}).get("bytes_limit", 0)
    return nbytes <= config.train.device_image_fraction * limit


def _prefetch(iterator, size: int = 2):
    """Keep `size` items of `iterator` in flight (device_put is asynchronous: the next batch copies while the
    current step runs)."""
    queue = collections.deque()
    for item in iterator:
        queue.append(item)
        if len(queue) == size:
            yield queue.popleft()
    yield from queue


class _MetricLog:
    """Per-step metrics stay on the device; `flush` fetches them in one transfer every `train.log_every` steps
    (and before each checkpoint), checks them for a non-finite loss and writes their mean."""

    def __init__(self, writer, schedule, batch: int, steps_per_epoch: int):
        self.writer, self.schedule, self.batch, self.steps_per_epoch = writer, schedule, batch, steps_per_epoch
        self.pending, self.tic = [], time.perf_counter()

    def add(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))

    def restart_clock(self) -> None:
        """Leave evaluation and checkpoint time out of the next images/s."""
        self.tic = time.perf_counter()

    def flush(self, store) -> dict:
        if not self.pending:
            return {}
        steps = [s for s, _ in self.pending]
        values = jax.device_get([jax.tree.map(lambda v: v.addressable_shards[0].data, m) for _, m in self.pending])
        values = [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()} for m in values]
        self.pending = []
        for step, m in zip(steps, values):
            if not m["finite"]:
                store.wait()
                raise NonFiniteLossError(
                    f"loss became non-finite at step {step} (epoch {step // self.steps_per_epoch + 1}, "
                    f"{m}); stopped without saving, the last good checkpoint (step {store.latest_step()}) is kept "
                    f"in {store.directory}. Try a lower optim.lr or a warm-up (optim.warmup_epochs).")
        toc = time.perf_counter()
        mean = {k: float(np.mean([m[k] for m in values])) for k in values[0] if k != "finite"}
        if "loss_scale" in mean:  # float16: the scale now, not the interval's mean
            mean["loss_scale"] = values[-1]["loss_scale"]
        overflows = [s for s, m in zip(steps, values) if m.get("skipped")]
        if overflows:
            logging.info("float16 gradients overflowed at step(s) %s: update skipped, loss scale lowered to %g",
                         overflows, mean["loss_scale"])
        mean["lr"] = float(self.schedule(steps[-1]))
        mean["images_per_s"] = self.batch * len(steps) / (toc - self.tic)
        self.tic = toc
        if self.writer:
            self.writer.write(steps[-1] + 1, "train", mean)
        return mean


_CHUNK = 4096  # training images per host->device copy (600 MB at 384×128)


def _device_data(data, on_device: bool, n: int) -> tuple:
    """(images, labels) replicated on the local devices when the training set lives there, else (None, None).
    Every process holds the whole set then (each step indexes its own slice of the batch)."""
    if not on_device:
        return None, None
    images = data.train.images  # numpy, or a CachedImages file: copied in chunks, never whole on the host
    parts = [replicate(images[i:i + _CHUNK], n) for i in range(0, len(images), _CHUNK)]
    return jnp.concatenate(parts, axis=1), replicate(data.train.pids.astype(np.int32), n)


def _epoch_feed(data, order: np.ndarray, resident: tuple, first: int, n: int):
    """(images, labels, order) device arguments of each step from `first` on: the resident set with the epoch's
    index table, or each step's batch streamed from the host one step ahead."""
    if resident[0] is not None:
        table = replicate(order.astype(np.int32), n)
        for _ in range(first, len(order)):
            yield resident + (table,)
        return
    rows = replicate(np.arange(order.shape[1], dtype=np.int32)[None], n)

    def batches():
        for idx in order[first:]:
            yield (replicate(data.train.images[idx], n), replicate(data.train.pids[idx].astype(np.int32), n), rows)

    yield from _prefetch(batches())


def train_and_evaluate(config, workdir: str, data, writer=None) -> dict:
    """Train on data.train (resuming from workdir's latest checkpoint), evaluate on query/gallery periodically
    and at the end; returns the final results dict (gldfa_jax.inference).

    In a multi-process run every process calls this with the same arguments: each reads only its slice of every
    batch, all save the checkpoints together (Orbax; the state is replicated, so process 0 writes it), and all
    run the same evaluation, so they take the same best-checkpoint decision; process 0 writes the metrics
    (`writer` is None elsewhere) and the reports."""
    from tqdm import tqdm

    from data_pipelines.sampler import PKSampler
    from gldfa_jax import checkpointing, inference, pretrained
    from gldfa_jax.model import build_model

    store = checkpointing.CheckpointStore(workdir, config.train.keep_checkpoints)
    store.save_config(config)  # as given: scaled_for_devices is applied again on resume
    config = scaled_for_devices(config, jax.device_count())
    t, d = config.train, config.data
    sampler = PKSampler(data.train.pids, d.num_identities, d.num_instances, config.seed)
    spe = steps_per_epoch(config, sampler)
    batch = d.num_identities * d.num_instances
    model = build_model(config.model, data.num_classes, axis_name=AXIS)
    tx = make_optimizer(config.optim, spe, loss_scale_for(config, model))
    image_shape = (d.height, d.width, 3)
    init_rng, aug_rng = jax.jit(lambda: jax.random.split(jax.random.PRNGKey(config.seed)))()
    variables = init_variables(model, init_rng, image_shape)

    template = create_train_state(model, tx, variables, data.num_classes, aug_rng, image_shape)
    if store.latest_step() is not None:
        state, meta = checkpointing.restore(store.latest, template)
        if meta["steps_per_epoch"] != spe:
            raise ValueError(f"checkpoint in {store.directory} used {meta['steps_per_epoch']} steps per epoch, "
                             f"this config gives {spe}; use a fresh --workdir or the original config.")
        start = int(meta["step"])
        logging.info("resuming from step %d (epoch %d)", start, start // spe)
    else:
        start = 0
        if config.model.pretrained:
            variables = pretrained.load_pretrained(config.model.pretrained, variables)
        else:
            logging.info("model.pretrained is empty: training starts from scratch (random initialisation)")
        state = create_train_state(model, tx, variables, data.num_classes, aug_rng, image_shape)
    best_map = store.best_map()

    host, hosts, n = jax.process_index(), jax.process_count(), num_devices()
    per_host = batch // hosts
    shard_batch(np.zeros(per_host), n)  # the host batch must split over the local devices
    p_step = data_parallel(make_batch_step(model, tx, config, hosts), donate_argnums=(0,))
    resident = _device_data(data, images_on_device(config, data.train.images.nbytes), n)
    logging.info("training images: %s", "in device memory" if resident[0] is not None else "streamed per step")
    state = replicate(state, n)
    log = _MetricLog(writer, lr_schedule(config.optim, spe, xp=np), batch, spe)
    results = {}

    def evaluate(epoch):
        final = epoch == t.epochs - 1
        variables = first_replica({"params": state.params, "batch_stats": state.batch_stats})
        q_feats, g_feats, evaluated = evaluate_model(model, variables, data, config, final)
        res = evaluated.results
        if writer:
            for mode, r in res.items():
                writer.write((epoch + 1) * spe, f"eval/{mode}", r)
            writer.flush()
        logging.info("epoch %d evaluation:\n%s", epoch + 1, inference.format_table(res))
        if final:  # after the metrics are flushed, so the curves include this evaluation
            write_reports(workdir, q_feats, g_feats, data, config, spe, evaluated)
        return res

    for epoch in range(start // spe, t.epochs):
        order = epoch_batches(sampler, epoch, spe)[:, host * per_host:(host + 1) * per_host]  # this host's slice
        first = start - epoch * spe if epoch == start // spe else 0
        bar = tqdm(range(first, spe), desc=f"epoch {epoch + 1}/{t.epochs}", unit="step", leave=False,
                   initial=first, total=spe)
        for i, args in zip(bar, _epoch_feed(data, order, resident, first, n)):
            step = epoch * spe + i
            state, metrics = p_step(state, *args)
            log.add(step, metrics)
            every = t.checkpoint_every_steps
            save_now = bool(every and (step + 1) % every == 0 and i < spe - 1)
            if (step + 1) % t.log_every == 0 or i == spe - 1 or save_now:
                shown = log.flush(store)
                bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
            if save_now:
                store.save(unreplicate(state), _meta(step + 1, spe))
        bar.close()  # the epoch's last step flushed the metrics
        evaluated, host_state = None, None
        if _is_due(epoch, t.eval_every, t.epochs - 1):
            results = evaluated = evaluate(epoch)
            score = results.get(config.eval.best_mode, next(iter(results.values())))["mAP"]
            if agree(score > best_map):
                best_map, host_state = score, unreplicate(state)
                store.save(host_state, _meta((epoch + 1) * spe, spe, results), best_map=best_map)
        if _is_due(epoch, t.checkpoint_every, t.epochs - 1):
            host_state = unreplicate(state) if host_state is None else host_state  # one device->host copy
            store.save(host_state, _meta((epoch + 1) * spe, spe, evaluated))
        if writer:
            writer.flush()
        log.restart_clock()
    if not results:  # resumed after the last epoch had finished: evaluate the restored final state
        results = evaluate(t.epochs - 1)
    store.wait()
    store.close()
    return results


def agree(decision: bool) -> bool:
    """Process 0's decision in every process. Every process evaluates the same replica, so they agree anyway;
    taking one process's word makes sure they all join the same cooperative checkpoint save (Orbax waits for
    every process: one that skipped it would leave the others waiting)."""
    if jax.process_count() == 1:
        return decision
    from jax.experimental import multihost_utils

    with jax.transfer_guard("allow"):  # one scalar, moved implicitly inside jax's helper
        return bool(multihost_utils.broadcast_one_to_all(np.int32(decision)))


def evaluate_model(model, variables, data, config, final: bool = True) -> tuple:
    """Features of data.query / data.gallery and their inference.Evaluation -> (q_feats, g_feats, evaluated).
    `final`: every mode with re-ranking, keeping what the reports draw; otherwise eval.best_mode alone without
    re-ranking (every mode when eval.periodic_all_modes)."""
    from gldfa_jax import inference, reports

    q_feats, g_feats = inference.split_features(model, variables, data.query, data.gallery, config)
    every_mode = final or config.eval.periodic_all_modes
    evaluated = inference.evaluate(q_feats, g_feats, data.query, data.gallery, config,
                                   modes=None if every_mode else (config.eval.best_mode,),
                                   with_rerank=None if every_mode else False,
                                   report_queries=reports.sample_queries(len(data.query.pids)) if final else None)
    return q_feats, g_feats, evaluated


def write_reports(workdir: str, q_feats: dict, g_feats: dict, data, config, spe: int, evaluated) -> None:
    """The PNG reports of an evaluation (retrieval grid, stripe alignment, CMC, training curves) in WORKDIR/reports,
    drawn from `evaluated` (evaluate_model) without computing distances again."""
    from gldfa_jax import reports

    if jax.process_index() != 0:
        return
    out = os.path.join(workdir, "reports")
    os.makedirs(out, exist_ok=True)
    paths = reports.write_eval_reports(out, q_feats, g_feats, data.query, data.gallery, config, evaluated=evaluated,
                                       metrics_jsonl=os.path.join(workdir, "metrics.jsonl"), steps_per_epoch=spe)
    logging.info("reports: %s", ", ".join(sorted(paths.values())))


def _meta(step: int, spe: int, results=None) -> dict:
    return {"step": int(step), "epoch": int(step // spe), "steps_per_epoch": int(spe), "results": results}
