"""Packed training rows: several examples per row, each with its own head, prefix and tail,
segment ids and positions from 0. Packed and unpacked give the same logits, loss and gradients
(tiny LLaMA with GQA and RoPE, tiny GPT-2 with learned positions, LoRA active), attention never
crosses an example, and the layout is what `PackedBatch` documents."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mats_jax.config import LoraConfig, MapperConfig, MATSConfig
from mats_jax.mats.model import MATS, TRAINABLE
from mats_jax.mats.prompt import Example, PackedBatch, PromptBuilder
from mats_jax.models.layers import Linear
from mats_jax.models.registry import build_model
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path
from tests.references.llama import TINY

VOCAB = 49152  # the SmolLM2 tokenizer's
PREFIX = 4
CLAP_DIM = 32
TAIL_LENGTH = 40
FAMILIES = {
    "llama": (TINY | dict(vocab_size=VOCAB), ("q_proj", "v_proj")),
    "gpt2": (
        dict(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4),
        ("c_attn",),
    ),
}
# (instruction, tag, answer): prompts and answers of different lengths, so every example has
# left and right neighbours of other lengths; the last answer is cut by tail_length
RECORDS = [
    ("Describe the following audio in a caption.", "[audio caption clotho]", "Birds sing."),
    ("Is it raining?", "[audio qa]", "no"),
    ("Describe.", "", "A dog barks twice, then a car passes by on a wet road."),
    ("What is the sound?", "[audio cla audioset]", "Speech, music"),
    ("Describe the following audio in a caption.", "[audio caption audiocaps]", "Wind."),
    ("Describe.", "", " ".join(["rain and thunder"] * 12)),
]
ROWS = [[0, 1, 2], [3], [4, 5], []]  # indices into RECORDS; an empty row is all padding
MAX_PER_ROW = 3


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(smollm2_gguf_path())


@pytest.fixture(scope="module")
def builder(tokenizer):
    return PromptBuilder(tokenizer, tail_length=TAIL_LENGTH, prefix_length=PREFIX)


def build(family: str) -> MATS:
    """Tiny MATS in eval mode (LoRA dropout off), every lora_b random so the adapters act."""
    config, targets = FAMILIES[family]
    llm = build_model(family, config, seed=1)
    mapper = MapperConfig(
        clap_dim=CLAP_DIM, dim=48, prefix_length=PREFIX, clip_length=4, num_layers=2
    )
    model = MATS(llm, MATSConfig(mapper=mapper, lora=LoraConfig(targets=targets)), rngs=nnx.Rngs(0))
    key = jax.random.key(2)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Linear) and module.lora_b is not None:
            key, sub = jax.random.split(key)
            module.lora_b[...] = 0.05 * jax.random.normal(sub, module.lora_b.shape)
    model.eval()
    return model


def packed_inputs(builder, examples, clap, row_length):
    """(clap [R, M, clap_dim] following the rows' slots, PackedBatch as jax arrays, offsets):
    offsets[i] = (row, first position) of example i."""
    rows = [[examples[i] for i in row] for row in ROWS]
    batch = builder.packed_batch(rows, row_length=row_length, max_per_row=MAX_PER_ROW)
    slots = np.zeros((len(ROWS), MAX_PER_ROW, CLAP_DIM), np.float32)
    offsets = {}
    for r, row in enumerate(ROWS):
        at = 0
        for e, i in enumerate(row):
            slots[r, e] = clap[i]
            offsets[i] = (r, at)
            at += builder.example_length(examples[i])
    as_jax = PackedBatch(**{f.name: jnp.asarray(getattr(batch, f.name)) for f in fields()})
    return jnp.asarray(slots), as_jax, offsets


def fields():
    return dataclasses.fields(PackedBatch)


def unpacked_logits(model, clap, batch):
    """Logits [N, H + P + L, V] of the unpacked reference layout (what `MATS.loss` computes)."""
    prefix = model.prefix(clap)
    sequence = model.sequence(prefix, jnp.asarray(batch.head), jnp.asarray(batch.tail))
    start = len(batch.head) + prefix.shape[1]
    mask = jnp.concatenate([jnp.ones((len(batch.tail), start), bool), batch.tail_mask], axis=1)
    hidden, _ = model.llm.hidden_states(embeddings=sequence, attention_mask=mask)
    return np.asarray(model.llm.logits(hidden))


def packed_logits(model, clap, batch):
    return np.asarray(model.llm.logits(model.packed_hidden_states(clap, batch, None)))


def setup(builder, family):
    model = build(family)
    instructions, tags, answers = zip(*RECORDS)
    unpacked = builder.training_batch(instructions, tags, answers)
    examples = [builder.example(*record) for record in RECORDS]
    clap = np.asarray(jax.random.normal(jax.random.key(3), (len(RECORDS), CLAP_DIM)))
    row_length = max(sum(builder.example_length(examples[i]) for i in row) for row in ROWS) + 3
    return model, unpacked, examples, clap, row_length


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_logits_loss_and_gradients_match_unpacked(builder, family):
    model, unpacked, examples, clap, row_length = setup(builder, family)
    for i, example in enumerate(examples):  # one tokenisation: the same tails as training_batch
        n = len(example.tail)
        assert unpacked.tail[i, :n].tolist() == example.tail.tolist()
        assert unpacked.tail_mask[i].sum() == n
        assert np.flatnonzero(unpacked.loss_mask[i]).tolist() == list(
            range(example.answer_start, n)
        )
    assert len(examples[5].tail) == TAIL_LENGTH  # the long answer was cut, EOS kept
    slots, batch, offsets = packed_inputs(builder, examples, clap, row_length)

    reference = unpacked_logits(model, jnp.asarray(clap), unpacked)
    packed = packed_logits(model, slots, batch)
    head = len(builder.head)
    worst = 0.0
    for i, example in enumerate(examples):
        r, at = offsets[i]
        start = head + PREFIX
        # position start + j - 1 predicts tail[j] for every target j (and every real position
        # is compared, prompt and prefix included)
        length = builder.example_length(example)
        targets = start + np.arange(example.answer_start, len(example.tail)) - 1
        np.testing.assert_allclose(
            packed[r, at + targets], reference[i, targets], atol=1e-5, rtol=0
        )
        error = np.abs(packed[r, at : at + length] - reference[i, :length]).max()
        worst = max(worst, float(error))
    assert worst < 1e-5, worst

    graphdef, trainable, rest = nnx.split(model, TRAINABLE, ...)

    def loss_of(method, *args):
        def fn(state):
            return getattr(nnx.merge(graphdef, state, rest), method)(*args, None)

        return jax.jit(jax.value_and_grad(fn, has_aux=True))(trainable)

    (ref_loss, ref_count), ref_grads = loss_of("loss", jnp.asarray(clap), unpacked)
    (loss, count), grads = loss_of("packed_loss", slots, batch)
    assert int(count) == int(ref_count) == int(unpacked.loss_mask.sum())
    np.testing.assert_allclose(float(loss), float(ref_loss), atol=1e-5, rtol=0)
    flat, ref_flat = nnx.to_flat_state(grads), dict(nnx.to_flat_state(ref_grads))
    assert len(flat) == len(ref_flat) and any("lora_b" in map(str, p) for p, _ in flat)
    for path, grad in flat:
        got, expected = np.asarray(grad[...]), np.asarray(ref_flat[path][...])
        assert np.all(np.isfinite(got)), path
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=str(path))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_attention_never_crosses_an_example(builder, family):
    """Changing example 1 (tokens and CLAP, same length) leaves every other example's logits,
    its row neighbours' included, bit-identical."""
    model, _, examples, clap, row_length = setup(builder, family)
    slots, batch, offsets = packed_inputs(builder, examples, clap, row_length)
    before = packed_logits(model, slots, batch)

    changed = list(examples)
    tail = np.random.default_rng(0).integers(3, VOCAB, len(examples[1].tail)).astype(np.int32)
    changed[1] = Example(tail, examples[1].answer_start)
    other = clap.copy()
    other[1] = -3.0 * clap[1] + 1.0
    slots2, batch2, offsets2 = packed_inputs(builder, changed, other, row_length)
    assert offsets2 == offsets
    after = packed_logits(model, slots2, batch2)

    r, at = offsets[1]
    length = builder.example_length(examples[1])
    assert not np.array_equal(before[r, at : at + length], after[r, at : at + length])
    for i, example in enumerate(examples):
        if i != 1:
            r, at = offsets[i]
            span = slice(at, at + builder.example_length(example))
            assert np.array_equal(before[r, span], after[r, span]), i


def test_empty_slots_give_no_nan(builder):
    """Garbage (NaN) in an unused CLAP slot changes nothing: slots not in use are zeroed."""
    model, _, examples, clap, row_length = setup(builder, "llama")
    slots, batch, _ = packed_inputs(builder, examples, clap, row_length)
    garbage = slots.at[1, 1:].set(jnp.nan).at[3].set(jnp.nan)
    loss, _ = model.packed_loss(slots, batch, None)
    loss_garbage, _ = model.packed_loss(garbage, batch, None)
    assert np.isfinite(float(loss)) and float(loss) == float(loss_garbage)
    noisy, _ = model.packed_loss(slots, batch, jax.random.key(5))
    assert np.isfinite(float(noisy)) and float(noisy) != float(loss)


class WordTokenizer:
    """A tiny tokenizer with the transformers API the builder uses: one id per word."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [10 + len(w) for w in text.split()]})()


def test_packed_layout_by_hand():
    builder = PromptBuilder(WordTokenizer(), tail_length=16, prefix_length=2)
    assert builder.head.tolist() == [1, 15, 18]  # BOS "USER:" "<Speech>"
    a, b = Example(np.array([30, 31, 32], np.int32), 1), Example(np.array([40, 41], np.int32), 1)
    assert builder.example_length(a) == 8 and builder.example_length(b) == 7
    batch = builder.packed_batch([[a, b], [b]], row_length=16, max_per_row=2)
    P = 0  # pad
    assert batch.tokens.tolist() == [
        [1, 15, 18, P, P, 30, 31, 32, 1, 15, 18, P, P, 40, 41, P],
        [1, 15, 18, P, P, 40, 41] + [P] * 9,
    ]
    assert batch.segments.tolist() == [[1] * 8 + [2] * 7 + [0], [1] * 7 + [0] * 9]
    assert batch.positions.tolist() == [
        list(range(8)) + list(range(7)) + [0],
        list(range(7)) + [0] * 9,
    ]
    assert batch.prefix_slot.tolist() == [
        [-1, -1, -1, 0, 1, -1, -1, -1, -1, -1, -1, 2, 3, -1, -1, -1],
        [-1, -1, -1, 0, 1] + [-1] * 11,
    ]
    assert np.flatnonzero(batch.loss_mask[0]).tolist() == [6, 7, 14]
    assert np.flatnonzero(batch.loss_mask[1]).tolist() == [6]
    assert batch.examples.tolist() == [[True, True], [True, False]]
    # the positions before the targets, then -1, as wide as the row when unbounded
    assert batch.predictors.tolist() == [[5, 6, 13] + [-1] * 13, [5] + [-1] * 15]
    for name, dtype in [
        ("tokens", np.int32),
        ("segments", np.int32),
        ("positions", np.int32),
        ("prefix_slot", np.int32),
        ("loss_mask", np.bool_),
        ("examples", np.bool_),
        ("predictors", np.int32),
    ]:
        assert getattr(batch, name).dtype == dtype, name
    bounded = builder.packed_batch(
        [[a, b], [b]], row_length=16, max_per_row=2, max_targets_per_row=3
    )
    assert bounded.predictors.tolist() == [[5, 6, 13], [5, -1, -1]]
    with pytest.raises(ValueError, match="row 0: example 1 brings the row to 3 targets, max_t"):
        builder.packed_batch([[a, b]], row_length=16, max_per_row=2, max_targets_per_row=2)

    with pytest.raises(ValueError, match="row 1: example 1 .* does not fit"):
        builder.packed_batch([[a], [a, b]], row_length=14, max_per_row=2)
    with pytest.raises(ValueError, match="row 1: 3 examples, max_per_row is 2"):
        builder.packed_batch([[a], [b, b, b]], row_length=32, max_per_row=2)
    with pytest.raises(ValueError, match="prefix_length"):
        PromptBuilder(WordTokenizer(), tail_length=16).packed_batch(
            [[a]], row_length=16, max_per_row=1
        )
    with pytest.raises(ValueError, match="the prompt alone takes 3 tokens"):
        PromptBuilder(WordTokenizer(), tail_length=3, prefix_length=2).example("Hi.", "", "yes")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_decoder_segment_ids(family):
    """At the LM level: two token sequences packed with segment ids and restarting positions give
    each one's own hidden states; segment ids with a cache are refused."""
    config, _ = FAMILIES[family]
    llm = build_model(family, config, seed=4)
    rng = np.random.default_rng(1)
    first, second = rng.integers(0, VOCAB, 5), rng.integers(0, VOCAB, 7)
    tokens = jnp.asarray(np.concatenate([first, second, [0, 0]])[None])
    segments = jnp.asarray([[1] * 5 + [2] * 7 + [0, 0]])
    positions = jnp.asarray([list(range(5)) + list(range(7)) + [0, 0]])
    packed, _ = llm.hidden_states(
        tokens, attention_mask=segments != 0, positions=positions, segment_ids=segments
    )
    alone = [llm.hidden_states(jnp.asarray(ids[None]))[0][0] for ids in (first, second)]
    np.testing.assert_allclose(packed[0, :5], alone[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed[0, 5:12], alone[1], atol=1e-5, rtol=0)
    assert np.all(np.isfinite(np.asarray(packed)))
    with pytest.raises(ValueError, match="segment_ids"):
        llm.hidden_states(tokens, segment_ids=segments, cache=llm.init_cache(1, 16))
