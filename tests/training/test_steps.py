"""The train step: 8 devices (data×fsdp×tensor = 2×2×2) equal 1 device, packed rows and padded
ones alike; frozen weights stay bit-identical; only trainable parameters have optimiser state;
the step counts examples and real positions."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from flax import nnx

from mats_jax.config import LoraConfig, MapperConfig, MATSConfig
from mats_jax.mats.model import MATS
from mats_jax.mats.prompt import PackedBatch, TrainingBatch
from mats_jax.models.registry import build_model
from mats_jax.runtime.sharding import DEFAULT_RULES, make_mesh
from mats_jax.training import optim
from mats_jax.training import steps as train_step

LLM = dict(
    model_type="llama",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def tiny_mats() -> MATS:
    llm = build_model("llama", LLM, seed=0)
    mapper = MapperConfig(clap_dim=32, dim=48, prefix_length=4, clip_length=4, num_layers=2)
    return MATS(llm, MATSConfig(mapper=mapper, lora=LoraConfig(dropout=0.1)), rngs=nnx.Rngs(0))


def synthetic_batch(accum: int = 2, micro: int = 4, length: int = 12) -> train_step.Batch:
    rng = np.random.default_rng(0)
    micro_batches, clap = [], []
    for _ in range(accum):
        lengths = rng.integers(6, length + 1, micro)
        mask = np.arange(length)[None] < lengths[:, None]
        loss_mask = mask & (np.arange(length)[None] >= 3)
        micro_batches.append(
            TrainingBatch(
                np.array([1, 5, 6], np.int32),
                rng.integers(0, 128, (micro, length)).astype(np.int32),
                mask,
                loss_mask,
            )
        )
        clap.append(rng.normal(size=(micro, 32)).astype(np.float32))
    return train_step.Batch.from_micro_batches(micro_batches, clap)


PREFIX = 4  # tiny_mats' prefix_length
HEAD = 3


def packed_batch(
    accum: int = 2, rows: int = 4, length: int = 40, per_row: int = 3
) -> train_step.Batch:
    """Rows of 1-3 examples of random tail lengths, laid out as PromptBuilder.packed_batch does."""
    rng = np.random.default_rng(1)
    micro_batches, clap = [], []
    for _ in range(accum):
        fields = {
            k: np.zeros((rows, length), np.int32) for k in ("tokens", "segments", "positions")
        }
        prefix_slot = np.full((rows, length), -1, np.int32)
        loss_mask = np.zeros((rows, length), bool)
        examples = np.zeros((rows, per_row), bool)
        for r in range(rows):
            at = 0
            for e in range(int(rng.integers(1, per_row + 1))):
                tail = int(rng.integers(4, 8))
                n = HEAD + PREFIX + tail
                span = slice(at, at + n)
                fields["tokens"][r, span] = rng.integers(1, 128, n)
                fields["segments"][r, span] = e + 1
                fields["positions"][r, span] = np.arange(n)
                prefix_slot[r, at + HEAD : at + HEAD + PREFIX] = e * PREFIX + np.arange(PREFIX)
                loss_mask[r, at + HEAD + PREFIX + 2 : at + n] = True
                examples[r, e] = True
                at += n
        predictors = np.full((rows, length), -1, np.int32)  # the positions before targets
        for r in range(rows):
            before = np.flatnonzero(loss_mask[r]) - 1
            predictors[r, : len(before)] = before
        micro_batches.append(
            PackedBatch(
                **fields,
                prefix_slot=prefix_slot,
                loss_mask=loss_mask,
                examples=examples,
                predictors=predictors,
            )
        )
        clap.append(rng.normal(size=(rows, per_row, 32)).astype(np.float32) * examples[..., None])
    return train_step.Batch.from_micro_batches(micro_batches, clap)


def run_steps(mesh, steps: int = 2, packed: bool = False):
    """(metrics per step, final TrainState, frozen state, initial frozen arrays)."""
    graphdef, trainable, rngs, frozen = train_step.split(tiny_mats())
    initial_frozen = jax.tree.map(np.asarray, frozen)
    tx = optim.adamw(peak_lr=1e-2, warmup_steps=1, total_steps=10, weight_decay=0.05)
    state, state_sharding, frozen, frozen_sharding = train_step.place(
        trainable, rngs, frozen, tx, mesh, DEFAULT_RULES
    )
    batch_sharding = train_step.batch_sharding(mesh, packed=packed)
    step = train_step.make_train_step(
        graphdef,
        tx,
        seed=0,
        schedule=optim.learning_rate(1e-2, 1, 10),
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=batch_sharding,
    )
    batch = jax.device_put(packed_batch() if packed else synthetic_batch(), batch_sharding)
    history = []
    for _ in range(steps):
        state, metrics = step(state, frozen, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    return history, state, frozen, initial_frozen


def flat(state) -> dict[str, np.ndarray]:
    return {
        ".".join(map(str, p)): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(state)[0]
    }


def test_eight_devices_equal_one():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    for layout in ("padded", "packed"):
        figures = result[layout]
        for one, eight in zip(figures["one"], figures["eight"]):
            assert abs(one - eight) <= 1e-5, (layout, one, eight)
        assert figures["max_param_diff"] <= 1e-5, (layout, figures["max_param_diff"])
        assert figures["one"][1] != figures["one"][0]  # parameters did move


def test_frozen_weights_are_bit_identical_and_only_trainables_have_optimizer_state():
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    history, state, frozen, initial = run_steps(mesh, steps=3)
    assert history[-1]["loss"] < history[0]["loss"]
    for key, value in flat(frozen).items():
        assert np.array_equal(value, flat(initial)[key]), key
    trainable_paths = set(flat(state.trainable))
    adam = state.opt_state[0]
    assert set(flat(adam.mu)) == trainable_paths and set(flat(adam.nu)) == trainable_paths
    assert not any(".base" in k or "embed_tokens" in k or "layernorm" in k for k in trainable_paths)
    optimizer_leaves = sum(x.size for x in jax.tree.leaves(state.opt_state))
    trainable_leaves = sum(x.size for x in jax.tree.leaves(state.trainable))
    assert optimizer_leaves <= 2 * trainable_leaves + 16  # mu, nu and a few counters, nothing more


def test_the_step_counts_examples_and_real_positions():
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    for packed in (False, True):
        batch = packed_batch() if packed else synthetic_batch()
        history, _, _, _ = run_steps(mesh, steps=1, packed=packed)
        if packed:
            examples = int(batch.inputs.examples.sum())
            real = int((batch.inputs.segments > 0).sum())
        else:
            examples = batch.inputs.tail.shape[0] * batch.inputs.tail.shape[1]
            real = examples * (HEAD + PREFIX) + int(batch.inputs.tail_mask.sum())
        assert history[0]["examples"] == examples and history[0]["real_positions"] == real
        assert real < train_step.computed_positions(batch.inputs, PREFIX)


def _compare_meshes() -> dict:
    jax.config.update("jax_default_matmul_precision", "highest")
    one = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    eight = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    result = {"devices": jax.device_count()}
    for layout, packed in (("padded", False), ("packed", True)):
        h1, s1, _, _ = run_steps(one, packed=packed)
        h8, s8, _, _ = run_steps(eight, packed=packed)
        p1, p8 = flat(s1.trainable), flat(s8.trainable)
        result[layout] = {
            "one": [h["loss"] for h in h1],
            "eight": [h["loss"] for h in h8],
            "max_param_diff": max(float(np.abs(p1[k] - p8[k]).max()) for k in p1),
        }
    return result


if __name__ == "__main__":
    print(json.dumps(_compare_meshes()))
