"""Dynamic loss scaling for float16 compute (Micikevicius et al., "Mixed Precision Training", ICLR 2018).

float16 gradients below ~6e-8 flush to zero, so the train step differentiates loss × scale and divides the
gradients by the scale. A step whose gradients overflow (inf/NaN) is skipped and the scale halved; after `period`
finite steps in a row the scale doubles (PyTorch GradScaler's rule). The scale rides in the optimiser state as the
first link of the chain, so checkpoints and resume carry it, and float32/bfloat16 runs keep their state layout.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

FACTOR = 2.0  # GradScaler's growth factor and 1 / backoff factor


class LossScaleState(NamedTuple):
    scale: jax.Array  # [] float32
    good_steps: jax.Array  # [] int32: finite steps since the scale last changed


def holder(init_scale: float) -> optax.GradientTransformation:
    """An identity link whose state is the loss scale; the train step reads it and `adjust`s it."""
    if not init_scale >= 1.0:
        raise ValueError(f"train.loss_scale_init={init_scale} must be >= 1 (e.g. 2**15).")

    def init(params):
        del params
        return LossScaleState(jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        return updates, state

    return optax.GradientTransformation(init, update)


def find(opt_state: Any) -> LossScaleState | None:
    """The loss-scale state of an optimiser state built with `holder` first in its chain, else None."""
    first = opt_state[0] if isinstance(opt_state, tuple) and opt_state else None
    return first if isinstance(first, LossScaleState) else None


def with_state(opt_state: tuple, state: LossScaleState) -> tuple:
    return (state,) + tuple(opt_state[1:])


def all_finite(tree: Any) -> jax.Array:
    """[] bool: every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def adjust(state: LossScaleState, finite: jax.Array, period: int) -> LossScaleState:
    """The next scale: halved (not below 1) after an overflow, doubled after `period` finite steps in a row."""
    grow = finite & (state.good_steps + 1 >= period)
    scale = jnp.where(
        finite, jnp.where(grow, state.scale * FACTOR, state.scale), jnp.maximum(state.scale / FACTOR, 1.0)
    )
    return LossScaleState(scale, jnp.where(finite & ~grow, state.good_steps + 1, 0).astype(jnp.int32))
