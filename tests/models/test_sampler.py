"""`mats_jax.models.sampler` against transformers' `generate` on tiny random models.

Every expected token comes from transformers run in the same test. The LLaMA has a 64-token
vocabulary and peaky logits (initializer_range 0.1) so that outputs vary, and EOS ids are picked
from transformers' own outputs so that rows really do end early.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from mats_jax.convert.llm import from_torch_state
from mats_jax.models.lora import add_lora, lora_targets, merge_lora
from mats_jax.models.sampler import GenerationConfig, _generate, generate, warp
from tests.references.llama import TINY, reference
from tests.references.torch_io import torch_state

CONFIG = TINY | dict(vocab_size=64, num_hidden_layers=2, initializer_range=0.1)
NEW = 15
PAPER = dict(
    num_beams=4, no_repeat_ngram_size=2, repetition_penalty=2.0, length_penalty=1.0, min_length=1
)

pytestmark = pytest.mark.filterwarnings("ignore:Passing `.*` with `inputs_embeds`")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """transformers' tiny-model generate is latency-bound: a second thread only adds contention
    (on a busy 2-core machine it turns 0.03 s into seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    ref = reference(CONFIG)
    return ref, from_torch_state("llama", CONFIG, torch_state(ref), source="reference")


@pytest.fixture(scope="module")
def prompts():
    """Three left-padded prompts (4, 7 and 2 real tokens) with pad id 0 in the padding."""
    tokens = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (3, 7))
    mask = np.ones_like(tokens)
    mask[0, :3] = 0
    mask[2, :5] = 0
    return np.where(mask == 1, tokens, 0), mask


def hf_settings(config: GenerationConfig) -> dict:
    """Every setting passed explicitly, so the model's generation_config defaults play no part."""
    return dict(
        max_new_tokens=config.max_new_tokens,
        min_length=config.min_length,
        num_beams=config.num_beams,
        do_sample=False,
        repetition_penalty=config.repetition_penalty,
        no_repeat_ngram_size=config.no_repeat_ngram_size,
        length_penalty=config.length_penalty,
        early_stopping=config.early_stopping,
        eos_token_id=None if config.eos_token_id is None else list(config.eos_token_id),
        pad_token_id=config.pad_token_id,
        num_return_sequences=1,
    )


def hf_generate(
    ref, config: GenerationConfig, tokens=None, mask=None, embeddings=None
) -> np.ndarray:
    """transformers' new tokens (it returns the prompt too when the prompt is token ids)."""
    with torch.no_grad():
        if embeddings is not None:
            return ref.generate(
                inputs_embeds=torch.tensor(embeddings),
                attention_mask=torch.tensor(mask),
                **hf_settings(config),
            ).numpy()
        out = ref.generate(
            torch.tensor(tokens), attention_mask=torch.tensor(mask), **hf_settings(config)
        )
    return out.numpy()[:, tokens.shape[1] :]


def ends_early(config: GenerationConfig, expected: np.ndarray) -> bool:
    return bool(np.isin(expected[:, :-1], config.eos_token_id).any())


def with_eos(
    ref, config: GenerationConfig, tokens=None, mask=None, embeddings=None, *, exercises=ends_early
) -> GenerationConfig:
    """`config` with an EOS id under which transformers' output `exercises` the case (by default:
    some row ends before max_new_tokens). Candidates are the tokens transformers generates
    without EOS, in order of appearance."""
    free = hf_generate(ref, config, tokens, mask, embeddings)
    for token in dict.fromkeys(free[:, 1:].T.ravel().tolist()):
        candidate = dataclasses.replace(config, eos_token_id=token)
        if exercises(candidate, hf_generate(ref, candidate, tokens, mask, embeddings)):
            return candidate
    raise AssertionError("no EOS id exercises this case")


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(repetition_penalty=1.7, no_repeat_ngram_size=3, min_length=9),
    ],
    ids=["plain", "penalties"],
)
def test_greedy_matches_transformers(models, prompts, settings):
    ref, model = models
    tokens, mask = prompts
    config = with_eos(
        ref, GenerationConfig(max_new_tokens=NEW, pad_token_id=1, **settings), tokens, mask
    )
    np.testing.assert_array_equal(
        generate(model, tokens=tokens, attention_mask=mask, config=config),
        hf_generate(ref, config, tokens, mask),
    )


@pytest.mark.parametrize(
    "settings",
    [
        PAPER,
        PAPER | dict(length_penalty=0.5, pad_token_id=0),  # pad 0: HF fills ended beams with EOS
        PAPER | dict(length_penalty=-0.5),
        PAPER | dict(early_stopping=True, num_beams=3),
    ],
    ids=["paper", "long-pad0", "short", "early-true"],
)
def test_beam_search_matches_transformers(models, prompts, settings):
    ref, model = models
    tokens, mask = prompts
    config = with_eos(
        ref,
        GenerationConfig(**{"max_new_tokens": NEW, "pad_token_id": 5, **settings}),
        tokens,
        mask,
    )
    np.testing.assert_array_equal(
        generate(model, tokens=tokens, attention_mask=mask, config=config),
        hf_generate(ref, config, tokens, mask),
    )


def test_beam_search_never_bounds_running_beams_by_max_length(models, prompts):
    """early_stopping="never" with a positive length penalty; the EOS id is one for which
    transformers' output differs from early_stopping=False, so the heuristic really matters."""
    ref, model = models
    tokens, mask = prompts
    never = GenerationConfig(
        max_new_tokens=NEW,
        pad_token_id=5,
        **PAPER | dict(num_beams=2, length_penalty=2.0, early_stopping="never"),
    )
    differs = lambda config, expected: (
        not np.array_equal(
            expected,
            hf_generate(ref, dataclasses.replace(config, early_stopping=False), tokens, mask),
        )
    )
    config = with_eos(ref, never, tokens, mask, exercises=differs)
    np.testing.assert_array_equal(
        generate(model, tokens=tokens, attention_mask=mask, config=config),
        hf_generate(ref, config, tokens, mask),
    )


def test_beam_search_without_eos_and_with_two_eos_ids(models, prompts):
    ref, model = models
    tokens, mask = prompts
    no_eos = GenerationConfig(max_new_tokens=8, **PAPER)
    expected = hf_generate(ref, no_eos, tokens, mask)
    np.testing.assert_array_equal(
        generate(model, tokens=tokens, attention_mask=mask, config=no_eos), expected
    )
    two = GenerationConfig(
        max_new_tokens=NEW,
        eos_token_id=(int(expected[1, 1]), int(expected[0, 3])),
        pad_token_id=5,
        **PAPER,
    )
    np.testing.assert_array_equal(
        generate(model, tokens=tokens, attention_mask=mask, config=two),
        hf_generate(ref, two, tokens, mask),
    )


@pytest.mark.parametrize(
    "settings", [dict(no_repeat_ngram_size=2, min_length=9), PAPER], ids=["greedy", "beam"]
)
def test_embeddings_prompt_matches_transformers(models, prompts, settings):
    """Processors see only generated ids; min_length counts the embedded prompt
    (HF: min_length - T)."""
    ref, model = models
    tokens = prompts[0][:2]
    mask = np.ones_like(tokens)  # padded embedding prompts: next test
    embeddings = np.asarray(model.embed(jnp.asarray(tokens)))
    config = with_eos(
        ref,
        GenerationConfig(max_new_tokens=NEW, pad_token_id=5, **settings),
        mask=mask,
        embeddings=embeddings,
    )
    np.testing.assert_array_equal(
        generate(model, embeddings=embeddings, attention_mask=mask, config=config),
        hf_generate(ref, config, mask=mask, embeddings=embeddings),
    )


def test_padded_embeddings_prompt_equals_each_row_alone(models, prompts):
    """Left padding must not change a row's output: compare with transformers on each row alone.

    Batched transformers 5.24 fails this with a repetition penalty: it skips the first
    `padding` positions of input_ids, which for an embeddings prompt are generated tokens.
    """
    ref, model = models
    tokens, mask = prompts
    embeddings = np.asarray(model.embed(jnp.asarray(tokens)))
    config = GenerationConfig(
        max_new_tokens=NEW, eos_token_id=int(tokens[1, 0]), pad_token_id=5, **PAPER
    )
    ours = generate(model, embeddings=embeddings, attention_mask=mask, config=config)
    for row in range(len(tokens)):
        real = mask[row] == 1
        alone = hf_generate(
            ref, config, mask=mask[row : row + 1, real], embeddings=embeddings[row : row + 1, real]
        )[0]
        np.testing.assert_array_equal(ours[row, : len(alone)], alone)
        assert (ours[row, len(alone) :] == config.pad_token_id).all()


@pytest.mark.parametrize(
    "warpers",
    [
        dict(temperature=0.7),
        dict(top_k=5),
        dict(top_p=0.8),
        dict(top_p=0.3, min_tokens_to_keep=3),
        dict(temperature=1.3, top_k=20, top_p=0.9),
        dict(temperature=0.5, top_k=1, top_p=0.5),
    ],
)
def test_warpers_match_transformers(warpers, rng):
    logits = rng.normal(size=(6, 50)).astype(np.float32) * 3
    keep = warpers.get("min_tokens_to_keep", 1)
    hf = transformers.LogitsProcessorList()
    if "temperature" in warpers:
        hf.append(transformers.TemperatureLogitsWarper(warpers["temperature"]))
    if "top_k" in warpers:
        hf.append(transformers.TopKLogitsWarper(warpers["top_k"], min_tokens_to_keep=keep))
    if "top_p" in warpers:
        hf.append(transformers.TopPLogitsWarper(warpers["top_p"], min_tokens_to_keep=keep))
    expected = hf(None, torch.tensor(logits)).numpy()
    ours = np.asarray(warp(jnp.asarray(logits), **warpers))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(ours[finite], expected[finite], atol=1e-6, rtol=0)


def test_sampling_is_seeded_and_top_k_1_is_greedy(models, prompts):
    ref, model = models
    tokens, mask = prompts
    sample = GenerationConfig(
        max_new_tokens=NEW, do_sample=True, temperature=1.5, top_k=0, top_p=0.95
    )
    run = lambda config, seed: generate(
        model, tokens=tokens, attention_mask=mask, config=config, rng=jax.random.key(seed)
    )
    first = run(sample, 0)
    np.testing.assert_array_equal(run(sample, 0), first)
    assert (run(sample, 1) != first).any()
    greedy = with_eos(ref, GenerationConfig(max_new_tokens=NEW, pad_token_id=1), tokens, mask)
    as_sampling = dataclasses.replace(greedy, do_sample=True, top_k=1)
    np.testing.assert_array_equal(run(as_sampling, 3), hf_generate(ref, greedy, tokens, mask))


def test_same_shapes_reuse_the_compiled_program(models, prompts):
    _, model = models
    tokens, mask = prompts
    config = GenerationConfig(max_new_tokens=4, eos_token_id=3)
    generate(model, tokens=tokens, attention_mask=mask, config=config)
    compiled = _generate._cache_size()
    generate(model, tokens=(tokens + 1) % CONFIG["vocab_size"], attention_mask=mask, config=config)
    assert _generate._cache_size() == compiled


def test_lora_dropout_is_off_during_generation(models, prompts, rng):
    """MATS decodes through LoRA adapters trained with dropout: generate must not drop."""
    ref, _ = models
    tokens, mask = prompts
    model = from_torch_state("llama", CONFIG, torch_state(ref), source="reference")
    add_lora(model, dropout=0.5, rngs=nnx.Rngs(0))
    for _, linear in lora_targets(model, ("q_proj", "v_proj")):
        linear.lora_b[...] = jnp.asarray(rng.normal(size=linear.lora_b.shape), jnp.float32) * 0.05
    config = GenerationConfig(max_new_tokens=NEW)
    with_adapters = generate(model, tokens=tokens, attention_mask=mask, config=config)
    merge_lora(model)
    np.testing.assert_array_equal(
        with_adapters, generate(model, tokens=tokens, attention_mask=mask, config=config)
    )


def test_gpt2_greedy_matches_transformers(prompts):
    torch.manual_seed(0)
    hf_config = dict(
        n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=64, initializer_range=0.2
    )
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_config)).eval()
    model = from_torch_state("gpt2", hf_config, torch_state(ref), source="reference")
    tokens, mask = prompts
    config = with_eos(
        ref,
        GenerationConfig(
            max_new_tokens=NEW, no_repeat_ngram_size=2, repetition_penalty=1.5, pad_token_id=1
        ),
        tokens,
        mask,
    )
    np.testing.assert_array_equal(
        generate(model, tokens=tokens, attention_mask=mask, config=config),
        hf_generate(ref, config, tokens, mask),
    )
