"""The jitted MATS train and eval steps, with explicit shardings and donated state.

The model is split once into a graph definition and three states: `trainable` (mapper,
projector, LoRA; f32, with optimiser state), `rngs` (dropout streams, threaded through the step)
and `frozen` (the LLM's base weights, never differentiated, never updated). Only `TrainState`
is donated and returned; `frozen` is an input of every step and stays bit-identical.

With clap.text_dropout the trainer hangs CLAP's text tower on the model (`attach_clap_text`), so
its frozen weights travel in `frozen`, and batches carry caption ids instead of embeddings: each
micro-batch's embeddings are then computed in the step, in train mode, with a dropout key of
(seed, step, micro-batch) like the noise, so a resumed run draws the same masks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mats_jax.clap.text_dropout import TrainModeText
from mats_jax.mats.model import MATS, TRAINABLE
from mats_jax.mats.prompt import PackedBatch, TrainingBatch
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

    inputs: a TrainingBatch (tail, tail_mask, loss_mask [A, B, L]; head [A, H], the same head
    for every row) or a PackedBatch (every field [A, R, ...]: R rows of several examples).
    clap: [A, B, clap_dim] unpacked, [A, R, M, clap_dim] packed (one row per example slot); or,
    with the CLAP text tower attached, int32 caption ids [A, B, text_len] / [A, R, M, text_len]
    (all pad ids in an empty slot).
    """

    inputs: TrainingBatch | PackedBatch
    clap: jax.Array

    @classmethod
    def from_micro_batches(cls, batches: list[TrainingBatch | PackedBatch], clap: list) -> Batch:
        return cls(jax.tree.map(lambda *xs: np.stack(xs), *batches), np.stack(clap))

    def micro(self, i) -> tuple[TrainingBatch | PackedBatch, jax.Array]:
        return jax.tree.map(lambda x: x[i], self.inputs), self.clap[i]

    @property
    def micro_batches(self) -> int:
        return self.clap.shape[0]


def micro_loss_and_counts(
    model: MATS, inputs: TrainingBatch | PackedBatch, clap: jax.Array, noise_key: jax.Array | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(mean loss over target tokens, counts) of one micro-batch, packed or not. counts:
    `tokens` (targets), `examples`, and `real_positions` (positions that hold an example's
    token or prefix embedding; the rest is padding computed for nothing)."""
    if isinstance(inputs, PackedBatch):
        loss, tokens = model.packed_loss(clap, inputs, noise_key)
        examples = jnp.sum(inputs.examples, dtype=jnp.float32)
        real = jnp.sum(inputs.segments > 0, dtype=jnp.float32)
    else:
        loss, tokens = model.loss(clap, inputs, noise_key)
        rows = inputs.tail.shape[0]
        examples = jnp.asarray(rows, jnp.float32)
        fixed = inputs.head.shape[0] + model.config.mapper.prefix_length
        real = rows * fixed + jnp.sum(inputs.tail_mask, dtype=jnp.float32)
    return loss, {"tokens": tokens, "examples": examples, "real_positions": real}


CLAP_DROPOUT_STREAM = 1  # folded into a micro-batch's noise key: the key of its CLAP dropout


def attach_clap_text(model: MATS, tower: TrainModeText) -> None:
    """Makes `tower` part of `model` (attribute `clap_text`): its weights split into `frozen`,
    and batches of caption ids embed in the step (`clap_embeddings`)."""
    model.clap_text = tower


def clap_embeddings(model: MATS, clap: jax.Array, key: jax.Array | None) -> jax.Array:
    """A micro-batch's CLAP embeddings: `clap` itself, or, for caption ids, the attached text
    tower's (train mode keyed by `key`; eval mode without one)."""
    if not jnp.issubdtype(clap.dtype, jnp.integer):
        return clap
    dropout_key = None if key is None else jax.random.fold_in(key, CLAP_DROPOUT_STREAM)
    return model.clap_text(clap, dropout_key)


def computed_positions(inputs: TrainingBatch | PackedBatch, prefix_length: int) -> int:
    """Positions one step computes (real or padding), from the shapes of a Batch's inputs."""
    if isinstance(inputs, PackedBatch):
        return int(np.prod(inputs.tokens.shape))
    micro, rows, tail = inputs.tail.shape
    return micro * rows * (inputs.head.shape[-1] + prefix_length + tail)


def split(model: MATS) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """(graphdef, trainable, rngs, frozen)."""
    return nnx.split(model, TRAINABLE, nnx.RngState, ...)


def init_state(
    trainable: nnx.State, rngs: nnx.State, tx: optax.GradientTransformation
) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable), rngs)


def batch_sharding(mesh: Mesh, *, packed: bool) -> Batch:
    """Rows split over the data axes, the shared head replicated."""
    rows = NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))
    if packed:
        return Batch(PackedBatch(*[rows] * len(dataclasses.fields(PackedBatch))), rows)
    return Batch(TrainingBatch(NamedSharding(mesh, PartitionSpec()), rows, rows, rows), rows)


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
    batch exactly, packed or not); the noise of each micro-batch is keyed by (seed, step,
    micro-batch). metrics: loss, grad_norm, learning_rate, and the step's global counts of
    target tokens, examples and real positions (`micro_loss_and_counts`).
    """

    def micro_loss(trainable, rngs, frozen, inputs, clap, key):
        # copy=True: fresh Variables at this trace level, so dropout may advance its RNG counts
        model = nnx.merge(graphdef, trainable, rngs, frozen, copy=True)
        loss, counts = micro_loss_and_counts(model, inputs, clap, key)
        return loss * counts["tokens"], (counts, nnx.state(model, nnx.RngState))

    grad_fn = jax.value_and_grad(jax.checkpoint(micro_loss) if remat else micro_loss, has_aux=True)

    def step(state: TrainState, frozen: nnx.State, batch: Batch):
        step_key = jax.random.fold_in(jax.random.key(seed), state.step)

        def accumulate(carry, i):
            grads, total, counts, rngs = carry
            inputs, clap = batch.micro(i)
            key = jax.random.fold_in(step_key, i)
            model = nnx.merge(graphdef, state.trainable, rngs, frozen, copy=True)
            clap = clap_embeddings(model, clap, key)  # outside the gradient: CLAP is frozen
            (weighted, (n, rngs)), g = grad_fn(state.trainable, rngs, frozen, inputs, clap, key)
            counts = jax.tree.map(jnp.add, counts, n)
            return (jax.tree.map(jnp.add, grads, g), total + weighted, counts, rngs), None

        zeros = jax.tree.map(jnp.zeros_like, state.trainable)
        zero = jnp.zeros((), jnp.float32)
        counts = {"tokens": zero, "examples": zero, "real_positions": zero}
        (grads, total, counts, rngs), _ = jax.lax.scan(
            accumulate, (zeros, zero, counts, state.rngs), jnp.arange(batch.micro_batches)
        )
        scale = 1.0 / jnp.maximum(counts["tokens"], 1.0)
        grads = jax.tree.map(lambda g: g * scale, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {
            "loss": total * scale,
            **counts,
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
            inputs, clap = batch.micro(i)
            loss, counts = micro_loss_and_counts(
                model, inputs, clap_embeddings(model, clap, None), None
            )
            n = counts["tokens"]
            return (carry[0] + loss * n, carry[1] + n), None

        zero = jnp.zeros((), jnp.float32)
        (total, count), _ = jax.lax.scan(body, (zero, zero), jnp.arange(batch.micro_batches))
        return total, count

    return jax.jit(evaluate, in_shardings=(state_sharding, frozen_sharding, batch_sharding))
