"""Real weights: the embedded SmolLM2-135M-Instruct GGUF in Flax against transformers loading the
same file (f32): logits, greedy continuations and beam search with the paper's settings."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mats_jax.convert.llm import load_llm
from mats_jax.models.sampler import GenerationConfig, generate
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path

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
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


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


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS[:2] + PROMPTS[3:])
def test_greedy_32_tokens_identical_to_transformers(reference, model, tokenizer, prompt):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference.generate(
            ids,
            do_sample=False,
            max_new_tokens=32,
            min_new_tokens=32,
            num_beams=1,
            eos_token_id=None,
        )[0, ids.shape[1] :].numpy()
    new = generate(
        model, tokens=ids.numpy(), config=GenerationConfig(max_new_tokens=32, eos_token_id=None)
    )
    assert new[0].tolist() == expected.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_beam_search_with_the_paper_settings_identical_to_transformers(
    reference, model, tokenizer, prompt
):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    settings = dict(
        num_beams=4,
        no_repeat_ngram_size=2,
        repetition_penalty=2.0,
        length_penalty=1.0,
        min_length=1,
        max_new_tokens=24,
    )
    with torch.no_grad():
        expected = reference.generate(
            ids,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            **settings,
        )[0, ids.shape[1] :]
    new = generate(
        model,
        tokens=ids.numpy(),
        config=GenerationConfig(eos_token_id=tokenizer.eos_token_id, **settings),
    )
    expected = [t for t in expected.tolist()]
    assert new[0].tolist() == expected[: len(new[0])] and len(new[0]) == len(expected)
