"""Real weights: the embedded SmolLM2-135M-Instruct GGUF in Flax against transformers loading the
same file (f32): logits, greedy continuations and beam search with the paper's settings."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mats_jax.convert.llm import load_llm
from mats_jax.embedded import smollm2_gguf_path
from mats_jax.tokenizer import load_tokenizer

PROMPTS = [
    "The capital of France is",
    "A dog barks while a car passes by on a rainy street, and",
    "def fibonacci(n):",
    "Describe the following audio in a caption.",
]


@pytest.fixture(scope="module")
def reference():
    path = smollm2_gguf_path()
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model():
    return load_llm(smollm2_gguf_path())


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(smollm2_gguf_path())


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(reference, model, tokenizer, prompt):
    ids = tokenizer(prompt, return_tensors="np").input_ids
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    logits, _ = model(jnp.asarray(ids))
    error = np.abs(np.asarray(logits) - expected).max()
    assert error <= 1e-3 * np.abs(expected).max(), error
