"""The jitted MATS train and eval steps, with explicit shardings and donated state.

The model is split once into a graph definition and three states: `trainable` (mapper,
projector, LoRA; f32, with optimiser state), `rngs` (dropout streams, threaded through the step)
and `frozen` (the LLM's base weights, never differentiated, never updated). Only `TrainState`
is donated and returned; `frozen` is an input of every step and stays bit-identical.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mats_jax.mats.model import MATS, TRAINABLE
from mats_jax.mats.prompt import TrainingBatch
from mats_jax.runtime.sharding import BATCH_AXES, Rules, state_shardings


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    trainable: nnx.State
    opt_state: optax.OptState
    rngs: nnx.State


@flax.struct.dataclass
class Batch:
    """Arrays of one optimiser step, split into micro-batches along axis 0 for accumulation.

    head [H] (shared); tail, tail_mask, loss_mask [A, B, L]; clap [A, B, clap_dim].
    """

    head: jax.Array
    tail: jax.Array
    tail_mask: jax.Array
    loss_mask: jax.Array
    clap: jax.Array

    @classmethod
    def from_micro_batches(cls, batches: list[TrainingBatch], clap: list) -> Batch:
        stack = lambda name: jnp.stack([getattr(b, name) for b in batches])
        return cls(
            jnp.asarray(batches[0].head),
            stack("tail"),
            stack("tail_mask"),
            stack("loss_mask"),
            jnp.stack([jnp.asarray(c) for c in clap]),
        )

    def micro(self, i) -> tuple[TrainingBatch, jax.Array]:
        return TrainingBatch(
            self.head, self.tail[i], self.tail_mask[i], self.loss_mask[i]
        ), self.clap[i]


def split(model: MATS) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """(graphdef, trainable, rngs, frozen)."""
    return nnx.split(model, TRAINABLE, nnx.RngState, ...)


def init_state(
    trainable: nnx.State, rngs: nnx.State, tx: optax.GradientTransformation
) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable), rngs)


def batch_sharding(mesh: Mesh) -> Batch:
    micro = NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))
    return Batch(NamedSharding(mesh, PartitionSpec()), micro, micro, micro, micro)


def state_sharding(state: TrainState, mesh: Mesh, rules: Rules) -> TrainState:
    replicated = NamedSharding(mesh, PartitionSpec())
    return TrainState(
        replicated,
        state_shardings(state.trainable, mesh, rules),
        state_shardings(state.opt_state, mesh, rules),
        jax.tree.map(lambda _: replicated, state.rngs),
    )


def place(
    trainable: nnx.State,
    rngs: nnx.State,
    frozen: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules: Rules,
) -> tuple[TrainState, TrainState, nnx.State, Any]:
    """(state, its sharding, frozen, its sharding): a fresh TrainState created directly in its
    sharded layout (optimiser state never materialises unsharded) and the frozen weights placed."""
    frozen_sharding = state_shardings(frozen, mesh, rules)
    create = lambda: init_state(trainable, rngs, tx)
    sharding = state_sharding(jax.eval_shape(create), mesh, rules)
    return (
        jax.jit(create, out_shardings=sharding)(),
        sharding,
        jax.device_put(frozen, frozen_sharding),
        frozen_sharding,
    )


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    seed: int,
    schedule: optax.Schedule,
    state_sharding: TrainState,
    frozen_sharding: Any,
    batch_sharding: Batch,
    remat: bool = False,
):
    """A jitted `step(state, frozen, batch) -> (state, metrics)`.

    The loss is the token-weighted mean over all micro-batches (so accumulation equals one big
    batch exactly); the noise of each micro-batch is keyed by (seed, step, micro-batch).
    """

    def micro_loss(trainable, rngs, frozen, batch: TrainingBatch, clap, key):
        # copy=True: fresh Variables at this trace level, so dropout may advance its RNG counts
        model = nnx.merge(graphdef, trainable, rngs, frozen, copy=True)
        loss, count = model.loss(clap, batch, key)
        return loss * count, (count, nnx.state(model, nnx.RngState))

    grad_fn = jax.value_and_grad(jax.checkpoint(micro_loss) if remat else micro_loss, has_aux=True)

    def step(state: TrainState, frozen: nnx.State, batch: Batch):
        step_key = jax.random.fold_in(jax.random.key(seed), state.step)

        def accumulate(carry, i):
            grads, total, count, rngs = carry
            micro, clap = batch.micro(i)
            (weighted, (n, rngs)), g = grad_fn(
                state.trainable, rngs, frozen, micro, clap, jax.random.fold_in(step_key, i)
            )
            return (jax.tree.map(jnp.add, grads, g), total + weighted, count + n, rngs), None

        zeros = jax.tree.map(jnp.zeros_like, state.trainable)
        init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), state.rngs)
        (grads, total, count, rngs), _ = jax.lax.scan(
            accumulate, init, jnp.arange(batch.tail.shape[0])
        )
        scale = 1.0 / jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g * scale, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {
            "loss": total * scale,
            "tokens": count,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        return TrainState(state.step + 1, trainable, opt_state, rngs), metrics

    return jax.jit(
        step,
        in_shardings=(state_sharding, frozen_sharding, batch_sharding),
        out_shardings=(state_sharding, None),
        donate_argnums=(0,),
    )


def make_eval_step(
    graphdef: nnx.GraphDef,
    *,
    state_sharding: TrainState,
    frozen_sharding: Any,
    batch_sharding: Batch,
):
    """A jitted `eval(state, frozen, batch) -> (summed loss, token count)`: no noise, no dropout."""

    def evaluate(state: TrainState, frozen: nnx.State, batch: Batch):
        model = nnx.merge(graphdef, state.trainable, state.rngs, frozen)
        model.eval()

        def body(carry, i):
            micro, clap = batch.micro(i)
            loss, n = model.loss(clap, micro, None)
            return (carry[0] + loss * n, carry[1] + n), None

        zero = jnp.zeros((), jnp.float32)
        (total, count), _ = jax.lax.scan(body, (zero, zero), jnp.arange(batch.tail.shape[0]))
        return total, count

    return jax.jit(evaluate, in_shardings=(state_sharding, frozen_sharding, batch_sharding))
