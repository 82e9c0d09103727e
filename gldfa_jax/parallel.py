"""Device layout, in one place: how the data-parallel train step spreads over devices and how arrays get there.

The step runs under `data_parallel` (jax.pmap over the axis AXIS): every device holds a replica of the
TrainState (`replicate`) and one shard of the global P×K batch (`shard_batch`); `first_replica`, `unreplicate` and
`first_shards` read results back. Moving to `jax.jit` with shardings or `jax.shard_map` over a mesh means changing
this module alone.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

AXIS = "batch"  # the named device axis of the data-parallel step


def data_parallel(fn: Callable, donate_argnums=()) -> Callable:
    """Map a per-device function over all local devices on the axis AXIS.

    Inputs carry a leading device axis ([n, ...], see `replicate` and `shard_batch`; pmap uses the first n
    devices); collectives inside `fn` name AXIS.
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
        return jax.make_array_from_single_device_arrays(
            (n,) + x.shape[1:], sharding, [jax.device_put(x, d) for d in devices]
        )

    return jax.tree.map(put, tree)


def first_shards(tree: Any) -> Any:
    """Pytree of [n, ...] device-axis arrays -> this process's first device's slice of each, [1, ...], where it
    lies (no transfer, no computation)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data, tree)


def first_replica(tree: Any) -> Any:
    """Replicated pytree -> device 0's replica, still on device 0 (no transfer)."""
    return jax.tree.map(lambda x: jax.lax.squeeze(x, (0,)), first_shards(tree))


def unreplicate(tree: Any) -> Any:
    """Replicated pytree -> host numpy copy of device 0's replica."""
    return jax.device_get(first_replica(tree))


def shard_batch(batch, num_devices: int, process_index: int = 0, process_count: int = 1):
    """This host's part of a global batch, split over its local devices.

    ``batch`` [B, ...] (e.g. a row of ``PKSampler.epoch``, or images) → [num_devices, B // (num_devices *
    process_count), ...]. Hosts take contiguous slices, so with per-device size a multiple of K each device sees
    whole identities.
    """
    batch = batch if hasattr(batch, "shape") else np.asarray(batch)
    if batch.ndim < 1:
        raise ValueError(f"batch must be one global batch [B, ...], got shape {getattr(batch, 'shape', None)}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count})")
    size, shards = batch.shape[0], num_devices * process_count
    if num_devices < 1 or size % shards:
        raise ValueError(
            f"batch size {size} is not divisible by num_devices * process_count = "
            f"{num_devices} * {process_count}; choose P×K (data.num_identities × data.num_instances) "
            "divisible by the number of devices"
        )
    per_host = size // process_count
    local = batch[process_index * per_host : (process_index + 1) * per_host]
    return local.reshape((num_devices, per_host // num_devices) + tuple(batch.shape[1:]))
