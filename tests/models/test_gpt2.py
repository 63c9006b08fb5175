"""The Flax GPT-2 at its full 124M configuration against transformers, random weights
(f32, ≤1e-4)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mats_jax.convert.llm import from_torch_state
from tests.references.torch_io import torch_state


@pytest.fixture(scope="module")
def reference() -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return model


@pytest.mark.slow
def test_full_size_logits_and_hidden_states_match_transformers(reference, rng):
    config = reference.config.to_dict()
    model = from_torch_state("gpt2", config, torch_state(reference), source="reference")
    tokens = rng.integers(0, 50257, (2, 77))
    with torch.no_grad():
        out = reference(torch.tensor(tokens), output_hidden_states=True)
    logits, _ = model(jnp.asarray(tokens))
    hidden, _ = model.hidden_states(jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(hidden), out.hidden_states[-1].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=1e-4, rtol=0)
