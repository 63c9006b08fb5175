"""Mapper, projector and LoRA merge against golden outputs of the original MATS code
(../shared/fixtures/mats_reference.npz, computed by the PyTorch implementation)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mats_jax.config import MapperConfig
from mats_jax.convert.mats import LLAMA_PREFIX, mats_keymap
from mats_jax.mats.mapper import Projector, build_mapper
from mats_jax.models.layers import Linear
from mats_jax.models.params import load_params
from tests.support.paths import FIXTURE, shared


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(shared(FIXTURE)))


class Bridge(nnx.Module):
    """Just the trainable bridge of MATS, named as in the full model."""

    def __init__(self, config: MapperConfig, llm_hidden: int):
        self.mapper = build_mapper(config, rngs=nnx.Rngs(0))
        self.projector = Projector(config.dim, llm_hidden, rngs=nnx.Rngs(0))


def test_mapper_and_projector_match_the_original_code(fixture):
    c = {k.removeprefix("config/"): int(v) for k, v in fixture.items() if k.startswith("config/")}
    config = MapperConfig(
        clap_dim=c["clap_dim"],
        dim=c["mapper_dim"],
        prefix_length=c["prefix_length"],
        clip_length=c["clip_length"],
        num_layers=c["num_layers"],
        num_heads=8,
    )
    bridge = Bridge(config, c["llm_hidden"])
    state = {k.removeprefix("model/"): v for k, v in fixture.items() if k.startswith("model/")}
    params = mats_keymap().to_flax(state, "fixture")
    load_params(bridge, {k: v for k, v in params.items() if not k.startswith("llm.")}, "fixture")

    mapped = bridge.mapper(jnp.asarray(fixture["input/clap_embedding"]))
    np.testing.assert_allclose(
        np.asarray(mapped), fixture["expected/mapper_output"], atol=1e-5, rtol=0
    )
    prefix = bridge.projector(mapped)
    np.testing.assert_allclose(
        np.asarray(prefix), fixture["expected/prefix_embeddings"], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("layer, proj", [(0, "q"), (0, "v"), (1, "q"), (1, "v")])
def test_lora_merge_matches_the_original_merged_weights(fixture, layer, proj):
    name = f"{LLAMA_PREFIX}layers.{layer}.self_attn.{proj}_proj"
    base = fixture[f"base/{name}.base_layer.weight"]
    a, b = (
        fixture[f"model/{name}.lora_A.default.weight"],
        fixture[f"model/{name}.lora_B.default.weight"],
    )
    rank, alpha = int(fixture["config/lora_rank"]), int(fixture["config/lora_alpha"])
    linear = Linear(base.shape[1], base.shape[0], axes=("embed", "q_heads"), rngs=nnx.Rngs(0))
    linear.add_lora(rank, alpha, 0.0, rngs=nnx.Rngs(0))
    linear.kernel[...], linear.lora_a[...], linear.lora_b[...] = base.T, a.T, b.T
    linear.merge_lora()
    np.testing.assert_allclose(
        np.asarray(linear.kernel[...]).T, fixture[f"merged/{name}.weight"], atol=1e-6, rtol=0
    )


def test_every_key_of_the_original_checkpoint_is_mapped_or_known(fixture):
    state = {k.removeprefix("model/"): v for k, v in fixture.items() if k.startswith("model/")}
    params = mats_keymap().to_flax(state, "fixture")
    assert sum(k.startswith("llm.") and "lora_" in k for k in params) == 8
    assert not any("ln_audio" in k or "inv_freq" in k for k in params)
