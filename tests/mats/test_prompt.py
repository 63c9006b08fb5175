"""The MATS prompt layout and loss mask, token by token, against the real SmolLM2 tokenizer."""

import pytest

from mats_jax.mats.prompt import HEAD_TEXT, PromptBuilder, tail_text
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(smollm2_gguf_path())


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def test_training_layout_and_loss_mask(tokenizer):
    builder = PromptBuilder(tokenizer, tail_length=64)
    batch = builder.training_batch(
        ["Describe the following audio in a caption.", "Is it raining?"],
        ["[audio caption audiocaps]", "[audio qa]"],
        ["A dog barks twice.", "yes"],
    )
    assert batch.head.tolist() == [tokenizer.bos_token_id] + ids(tokenizer, "USER: <Speech>")
    for row, (instruction, tag, answer) in enumerate(
        [
            (
                "Describe the following audio in a caption.",
                "[audio caption audiocaps]",
                "A dog barks twice.",
            ),
            ("Is it raining?", "[audio qa]", "yes"),
        ]
    ):
        prompt = ids(tokenizer, f"</Speech> {tag} {instruction}\nASSISTANT:")
        target = ids(tokenizer, answer) + [tokenizer.eos_token_id]
        n = len(prompt) + len(target)
        assert batch.tail[row, :n].tolist() == prompt + target
        assert batch.tail_mask[row].tolist() == [True] * n + [False] * (64 - n)
        assert batch.tail[row, batch.loss_mask[row]].tolist() == target
        assert (
            tokenizer.decode(batch.tail[row, batch.loss_mask[row]]) == answer + tokenizer.eos_token
        )


def test_empty_tag_and_long_answers(tokenizer):
    assert tail_text("Describe.", "") == "</Speech> Describe.\nASSISTANT:"
    builder = PromptBuilder(tokenizer, tail_length=40, max_answer_tokens=5)
    batch = builder.training_batch(["Describe."], [""], ["one two three four five six seven eight"])
    target = batch.tail[0, batch.loss_mask[0]].tolist()
    assert target == ids(tokenizer, "one two three four five six seven eight")[:5] + [
        tokenizer.eos_token_id
    ]
    short = PromptBuilder(tokenizer, tail_length=12).training_batch(
        ["Describe."], [""], ["a b c d e f g h i j"]
    )
    prompt = ids(tokenizer, "</Speech> Describe.\nASSISTANT:")
    assert short.tail[0].tolist() == prompt + ids(tokenizer, "a b c d e f g h i j")[
        : 11 - len(prompt)
    ] + [tokenizer.eos_token_id]
    with pytest.raises(ValueError, match="example 0: the prompt alone"):
        PromptBuilder(tokenizer, tail_length=8).training_batch(
            ["Describe the following audio."], [""], ["a"]
        )


def test_inference_batch_is_left_padded(tokenizer):
    batch = PromptBuilder(tokenizer, tail_length=64).inference_batch(
        ["Describe the following audio in a caption.", "Is it raining?"], ["", "[audio qa]"]
    )
    for row, text in enumerate(
        [
            "</Speech> Describe the following audio in a caption.\nASSISTANT:",
            "</Speech> [audio qa] Is it raining?\nASSISTANT:",
        ]
    ):
        expected = ids(tokenizer, text)
        assert batch.tail[row, batch.tail_mask[row]].tolist() == expected
        assert (
            batch.tail_mask[row, -len(expected) :].all()
            and not batch.tail_mask[row, : -len(expected)].any()
        )
    assert HEAD_TEXT == "USER: <Speech>"
