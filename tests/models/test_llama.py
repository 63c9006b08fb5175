"""The Flax LLaMA against transformers' LlamaForCausalLM with random weights (f32, ≤1e-4)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mats_jax.convert.llm import from_torch_state
from mats_jax.models.decoder import positions_from_mask
from tests.references.llama import TINY, reference
from tests.references.torch_io import torch_state


def port(ref, config):
    return from_torch_state("llama", config, torch_state(ref), source="reference")


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        TINY | dict(tie_word_embeddings=True, num_key_value_heads=6),
        TINY
        | dict(
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
            rope_theta=500000.0,
        ),
    ],
    ids=["gqa-untied", "mha-tied", "llama3-rope"],
)
def test_logits_match_transformers(config, rng):
    ref = reference(config)
    tokens = rng.integers(0, config["vocab_size"], (2, 150))
    with torch.no_grad():
        expected = ref(torch.tensor(tokens)).logits.numpy()
    logits, _ = port(ref, config)(jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_left_padding_and_embeddings_input_match_transformers(rng):
    ref = reference(TINY)
    tokens = rng.integers(0, TINY["vocab_size"], (3, 12))
    mask = np.ones_like(tokens)
    mask[0, :4] = 0
    mask[2, :7] = 0
    positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        embeds = ref.get_input_embeddings()(torch.tensor(tokens))
        expected = ref(
            inputs_embeds=embeds,
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
        ).logits.numpy()
    model = port(ref, TINY)
    logits, _ = model(
        embeddings=jnp.asarray(embeds.numpy()),
        attention_mask=jnp.asarray(mask),
        positions=jnp.asarray(positions),
    )
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(logits)[real], expected[real], atol=1e-4, rtol=0)


def test_cached_decoding_equals_full_forward(rng):
    """Prefill then one token at a time through the KV cache gives the full forward's logits."""
    ref = reference(TINY)
    model = port(ref, TINY)
    tokens = jnp.asarray(rng.integers(0, TINY["vocab_size"], (2, 10)))
    full, _ = model(tokens)
    cache = model.init_cache(2, 16)
    mask = jnp.zeros((2, 16), bool).at[:, :10].set(True)
    first, cache = model(tokens[:, :6], attention_mask=mask, cache=cache, cache_index=0)
    steps = [first]
    for i in range(6, 10):
        step, cache = model(tokens[:, i : i + 1], attention_mask=mask, cache=cache, cache_index=i)
        steps.append(step)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
