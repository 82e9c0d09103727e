"""The training loop: restore or initialise, train an epoch, evaluate and save, until the last epoch.

The loop feeds `train`'s data-parallel step from the P×K sampler, keeps per-step metrics on the device until
`train.log_every` (one fetch), and checkpoints with `checkpointing.CheckpointStore`.
"""

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from data_pipelines.sampler import PKSampler
from gldfa_jax import checkpointing, evaluation, features, parallel, pretrained, reports, train
from gldfa_jax.model import build_model


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
        values = jax.device_get([parallel.first_shards(m) for _, m in self.pending])
        values = [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()} for m in values]
        self.pending = []
        for step, m in zip(steps, values):
            if not m["finite"]:
                store.wait()
                raise NonFiniteLossError(
                    f"loss became non-finite at step {step} (epoch {step // self.steps_per_epoch + 1}, "
                    f"{m}); stopped without saving, the last good checkpoint (step {store.latest_step()}) is kept "
                    f"in {store.directory}. Try a lower optim.lr or a warm-up (optim.warmup_epochs)."
                )
        toc = time.perf_counter()
        mean = {k: float(np.mean([m[k] for m in values])) for k in values[0] if k != "finite"}
        if "loss_scale" in mean:  # float16: the scale now, not the interval's mean
            mean["loss_scale"] = values[-1]["loss_scale"]
        overflows = [s for s, m in zip(steps, values) if m.get("skipped")]
        if overflows:
            logging.info(
                "float16 gradients overflowed at step(s) %s: update skipped, loss scale lowered to %g",
                overflows,
                mean["loss_scale"],
            )
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
    images = data.train.images  # numpy, or LazyImages decoded per chunk: never whole on the host
    parts = [parallel.replicate(images[i : i + _CHUNK], n) for i in range(0, len(images), _CHUNK)]
    return jnp.concatenate(parts, axis=1), parallel.replicate(data.train.pids.astype(np.int32), n)


def _epoch_feed(data, order: np.ndarray, resident: tuple, first: int, n: int):
    """(images, labels, order) device arguments of each step from `first` on: the resident set with the epoch's
    index table, or each step's batch streamed from the host one step ahead."""
    if resident[0] is not None:
        table = parallel.replicate(order.astype(np.int32), n)
        for _ in range(first, len(order)):
            yield resident + (table,)
        return
    rows = parallel.replicate(np.arange(order.shape[1], dtype=np.int32)[None], n)

    def batches():
        for idx in order[first:]:
            yield (
                parallel.replicate(data.train.images[idx], n),
                parallel.replicate(data.train.pids[idx].astype(np.int32), n),
                rows,
            )

    yield from _prefetch(batches())


@dataclasses.dataclass
class Run:
    """What stays fixed while a run trains: built once by `setup`, read by the steps below."""

    config: Any
    workdir: str
    data: Any
    writer: Any
    store: Any  # checkpointing.CheckpointStore
    sampler: Any  # data_pipelines.sampler.PKSampler
    steps_per_epoch: int
    model: Any
    tx: Any
    p_step: Callable  # the data-parallel batch step
    resident: tuple  # (images, labels) in device memory, or (None, None): streamed
    log: _MetricLog
    per_host: int  # this process's rows of each global batch


def setup(config, workdir: str, data, writer=None) -> Run:
    """Sampler, model, optimiser, step function and checkpoint store of a run (`config` as given: the
    checkpoints keep it so, and the scaling for the device count is applied again on resume)."""
    store = checkpointing.CheckpointStore(workdir, config.train.keep_checkpoints)
    store.save_config(config)
    config = train.scaled_for_devices(config, jax.device_count())
    d = config.data
    sampler = PKSampler(data.train.pids, d.num_identities, d.num_instances, config.seed)
    spe = steps_per_epoch(config, sampler)
    batch = d.num_identities * d.num_instances
    model = build_model(config.model, data.num_classes, axis_name=parallel.AXIS)
    tx = train.make_optimizer(config.optim, spe, train.loss_scale_for(config, model))
    n, per_host = parallel.num_devices(), batch // jax.process_count()
    parallel.shard_batch(np.zeros(batch), n, jax.process_index(), jax.process_count())  # P×K splits over every device
    p_step = parallel.data_parallel(train.make_batch_step(model, tx, config, jax.process_count()), donate_argnums=(0,))
    resident = _device_data(data, images_on_device(config, data.train.images.nbytes), n)
    logging.info("training images: %s", "in device memory" if resident[0] is not None else "streamed per step")
    log = _MetricLog(writer, train.lr_schedule(config.optim, spe, xp=np), batch, spe)
    return Run(config, workdir, data, writer, store, sampler, spe, model, tx, p_step, resident, log, per_host)


def restore_or_initialise(run: Run) -> tuple:
    """(TrainState on the default device, first step): the workdir's latest checkpoint, else fresh weights
    (`model.pretrained`, or random)."""
    config, data, spe = run.config, run.data, run.steps_per_epoch
    image_shape = (config.data.height, config.data.width, 3)
    init_rng, aug_rng = jax.jit(lambda: jax.random.split(jax.random.PRNGKey(config.seed)))()
    if run.store.latest_step() is not None:
        template = train.state_template(run.model, run.tx, data.num_classes, image_shape)
        state, meta = checkpointing.restore(run.store.latest, template)
        if meta["steps_per_epoch"] != spe:
            raise ValueError(
                f"checkpoint in {run.store.directory} used {meta['steps_per_epoch']} steps per epoch, "
                f"this config gives {spe}; use a fresh --workdir or the original config."
            )
        start = int(meta["step"])
        logging.info("resuming from step %d (epoch %d)", start, start // spe)
        return state, start
    variables = train.init_variables(run.model, init_rng, image_shape)
    if config.model.pretrained:
        variables = pretrained.load_pretrained(config.model.pretrained, variables, config.model.backbone)
    else:
        logging.info("model.pretrained is empty: training starts from scratch (random initialisation)")
    return train.create_train_state(run.model, run.tx, variables, data.num_classes, aug_rng, image_shape), 0


def train_epoch(run: Run, state, epoch: int, first: int):
    """Steps `first` .. the end of `epoch` on the replicated state; checkpoints every
    `train.checkpoint_every_steps` inside the epoch. Returns the new replicated state."""
    t, spe, host = run.config.train, run.steps_per_epoch, jax.process_index()
    order = epoch_batches(run.sampler, epoch, spe)[:, host * run.per_host : (host + 1) * run.per_host]
    bar = tqdm(
        range(first, spe), desc=f"epoch {epoch + 1}/{t.epochs}", unit="step", leave=False, initial=first, total=spe
    )
    for i, args in zip(bar, _epoch_feed(run.data, order, run.resident, first, parallel.num_devices())):
        step = epoch * spe + i
        state, metrics = run.p_step(state, *args)
        run.log.add(step, metrics)
        every = t.checkpoint_every_steps
        save_now = bool(every and (step + 1) % every == 0 and i < spe - 1)
        if (step + 1) % t.log_every == 0 or i == spe - 1 or save_now:
            shown = run.log.flush(run.store)
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
        if save_now:
            run.store.save(parallel.unreplicate(state), _meta(step + 1, spe))
    bar.close()  # the epoch's last step flushed the metrics
    return state


def evaluate_epoch(run: Run, state, epoch: int) -> dict:
    """Evaluate the replicated state after `epoch`; the last epoch evaluates every mode and writes the reports."""
    config, spe = run.config, run.steps_per_epoch
    final = epoch == config.train.epochs - 1
    variables = parallel.first_replica({"params": state.params, "batch_stats": state.batch_stats})
    q_feats, g_feats, evaluated = evaluate_model(run.model, variables, run.data, config, final)
    res = evaluated.results
    if run.writer:
        for mode, r in res.items():
            run.writer.write((epoch + 1) * spe, f"eval/{mode}", r)
        run.writer.flush()
    logging.info("epoch %d evaluation:\n%s", epoch + 1, evaluation.format_table(res, config.eval.protocol))
    if final:  # after the metrics are flushed, so the curves include this evaluation
        reports.write_run_reports(run.workdir, evaluated, q_feats, g_feats, run.data, config, spe)
    return res


def save_epoch(run: Run, state, epoch: int, results: dict | None, best_map: float) -> float:
    """The best checkpoint when `results` beat `best_map` (by eval.best_mode's mAP), the periodic checkpoint
    when due; returns the best mAP so far."""
    config, spe = run.config, run.steps_per_epoch
    host_state = None
    if results is not None:
        score = results.get(config.eval.best_mode, next(iter(results.values())))["mAP"]
        if agree(score > best_map):
            best_map, host_state = score, parallel.unreplicate(state)
            run.store.save(host_state, _meta((epoch + 1) * spe, spe, results), best_map=best_map)
    if _is_due(epoch, config.train.checkpoint_every, config.train.epochs - 1):
        host_state = parallel.unreplicate(state) if host_state is None else host_state  # one device->host copy
        run.store.save(host_state, _meta((epoch + 1) * spe, spe, results))
    return best_map


def train_and_evaluate(config, workdir: str, data, writer=None) -> dict:
    """Train on data.train (resuming from workdir's latest checkpoint), evaluate on query/gallery periodically
    and at the end; returns the final results dict (gldfa_jax.evaluation).

    In a multi-process run every process calls this with the same arguments: each reads only its slice of every
    batch, all save the checkpoints together (Orbax; the state is replicated, so process 0 writes it), and all
    run the same evaluation, so they take the same best-checkpoint decision; process 0 writes the metrics
    (`writer` is None elsewhere) and the reports."""
    run = setup(config, workdir, data, writer)
    state, start = restore_or_initialise(run)
    state = parallel.replicate(state, parallel.num_devices())
    run.log.restart_clock()  # initialisation and restoring are not training time
    epochs, spe = run.config.train.epochs, run.steps_per_epoch
    best_map, results = run.store.best_map(), {}
    for epoch in range(start // spe, epochs):
        state = train_epoch(run, state, epoch, start - epoch * spe if epoch == start // spe else 0)
        evaluated = None
        if _is_due(epoch, run.config.train.eval_every, epochs - 1):
            results = evaluated = evaluate_epoch(run, state, epoch)
        best_map = save_epoch(run, state, epoch, evaluated, best_map)
        if writer:
            writer.flush()
        run.log.restart_clock()
    if not results:  # resumed after the last epoch had finished: evaluate the restored final state
        results = evaluate_epoch(run, state, epochs - 1)
    run.store.wait()
    run.store.close()
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
    """Features of data.query / data.gallery and their evaluation.Evaluation -> (q_feats, g_feats, evaluated).
    `final`: every mode with re-ranking, keeping what the reports draw; otherwise eval.best_mode alone without
    re-ranking (every mode when eval.periodic_all_modes)."""
    q_feats, g_feats = features.split_features(model, variables, data.query, data.gallery, config)
    every_mode = final or config.eval.periodic_all_modes
    evaluated = evaluation.evaluate(
        q_feats,
        g_feats,
        data.query,
        data.gallery,
        evaluation.EvalOptions.from_config(config),
        modes=None if every_mode else (config.eval.best_mode,),
        rerank_on=None if every_mode else False,
        report_queries=reports.sample_queries(len(data.query.pids)) if final else None,
    )
    return q_feats, g_feats, evaluated


def _meta(step: int, spe: int, results=None) -> dict:
    return {"step": int(step), "epoch": int(step // spe), "steps_per_epoch": int(spe), "results": results}
