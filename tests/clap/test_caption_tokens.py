"""CLAP caption tokenizers: known GPT-2 ids, and agreement with transformers on real captions.

The independent reference is transformers' GPT2Tokenizer built from a vocab.json/merges.txt
that this test derives from the same tiktoken ranks (the standard tiktoken -> HF conversion:
GPT-2's bytes_to_unicode byte mapping; each merge recovered by running BPE on a token with only
lower-ranked merges, which leaves exactly two parts). It is then set up exactly as msclap does:
`add_special_tokens({'pad_token': '!'})`, caption + " <|endoftext|>", max_length 77 padding.
"""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import transformers

from mats_jax.clap.caption_tokens import (
    EOS_ID,
    TokenizerError,
    gpt2_encoding,
    msclap_tokenize,
    roberta_tokenizer,
)
from mats_jax.runtime.assets import gpt2_bpe_ranks_path
from tests.support.paths import DATA_ROOT, shared

CLOTHO = DATA_ROOT / "captions" / "clotho" / "train.csv"
EDGE_CAPTIONS = [
    "",
    "Hello world",
    "Wow!! a dog barks !",
    "!",
    "it's the dog's bark, they'll see we'd",
    "café naïve 日本語 — “quoted” 🐶🔊",
    "tabs\tand\nnewlines  double  spaces ",
    "  leading",
    "numbers 12345 and 3.14",
    "a caption with <|endoftext|> inside",
    "UPPER lower MiXeD",
]


def _bytes_to_unicode() -> dict[int, str]:
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in mapping:
            mapping[b], extra = chr(256 + extra), extra + 1
    return mapping


def _two_part_split(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    parts, limit = [bytes([b]) for b in token], ranks[token]
    while True:
        pairs = [(ranks.get(a + b, limit), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank >= limit:
            return parts
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


@pytest.fixture(scope="module")
def hf_msclap_tokenizer(tmp_path_factory):
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (
            line.split() for line in gpt2_bpe_ranks_path().read_text().splitlines() if line
        )
    }
    to_unicode = _bytes_to_unicode()
    text = lambda token: "".join(to_unicode[b] for b in token)  # noqa: E731
    vocab = {text(token): rank for token, rank in ranks.items()} | {"<|endoftext|>": EOS_ID}
    merges = []
    for token in sorted((t for t in ranks if len(t) > 1), key=ranks.get):
        parts = _two_part_split(ranks, token)
        assert len(parts) == 2, token
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    assert len(merges) == 50000
    folder = tmp_path_factory.mktemp("gpt2_hf")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.GPT2Tokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_special_tokens({"pad_token": "!"})
    return tokenizer


def _clotho_captions(count: int = 200) -> list[str]:
    with shared(CLOTHO).open(newline="") as f:
        rows = list(csv.DictReader(f))[: count // 5]
    return [row[f"caption_{i}"] for row in rows for i in range(1, 6)]


def test_known_gpt2_ids():
    encoding = gpt2_encoding()
    assert encoding.encode("Hello world") == [15496, 995]
    assert encoding.encode("!", allowed_special="all") == [0]
    assert encoding.encode(" the") == [262]
    assert encoding.encode(" <|endoftext|>", allowed_special="all") == [220, EOS_ID]
    ids, mask = msclap_tokenize(["Hello world"])
    assert ids.dtype == mask.dtype == np.int32 and ids.shape == mask.shape == (1, 77)
    assert ids[0, :4].tolist() == [15496, 995, 220, EOS_ID] and not ids[0, 4:].any()
    assert mask[0].tolist() == [1] * 4 + [0] * 73


def test_exclamation_mark_is_split_out_like_msclaps_pad_token():
    ids, mask = msclap_tokenize(["Wow!!"])
    assert ids[0, :6].tolist() == [22017, 0, 0, 220, EOS_ID, 0]  # plain GPT-2: [22017, 3228]
    assert mask[0, :6].tolist() == [1, 1, 1, 1, 1, 0]


def test_matches_transformers_on_real_captions(hf_msclap_tokenizer):
    captions = _clotho_captions() + EDGE_CAPTIONS
    assert len(captions) == 211
    ids, mask = msclap_tokenize(captions)
    for row, caption in enumerate(captions):
        ref = hf_msclap_tokenizer(caption + " <|endoftext|>", max_length=77, padding="max_length")
        assert ids[row].tolist() == ref["input_ids"], caption
        assert mask[row].tolist() == ref["attention_mask"], caption


def test_overlong_caption_raises_or_truncates_keeping_eos():
    caption = " ".join(["dog"] * 100)
    with pytest.raises(TokenizerError, match="102 tokens, more than 77"):
        msclap_tokenize([caption])
    ids, mask = msclap_tokenize([caption], truncate=True)
    assert ids[0, :76].tolist() == gpt2_encoding().encode(caption)[:76]
    assert ids[0, 76] == EOS_ID and mask.all()


def test_missing_ranks_file(tmp_path):
    with pytest.raises(TokenizerError, match="no such file"):
        msclap_tokenize(["a"], ranks_file=tmp_path / "gpt2.tiktoken")


@pytest.fixture
def tiny_roberta(tmp_path) -> tuple[Path, Path]:
    vocab = {
        "<s>": 0,
        "<pad>": 1,
        "</s>": 2,
        "<unk>": 3,
        "a": 4,
        "Ġ": 5,
        "d": 6,
        "o": 7,
        "g": 8,
        "Ġd": 9,
        "Ġdo": 10,
        "Ġdog": 11,
        "<mask>": 12,
    }
    vocab_json, merges_txt = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab_json.write_text(json.dumps(vocab))
    merges_txt.write_text("#version: 0.2\nĠ d\nĠd o\nĠdo g\n")
    return vocab_json, merges_txt


def test_roberta_pads_with_1_and_masks(tiny_roberta):
    ids, mask = roberta_tokenizer(*tiny_roberta)(["a dog", "a dog dog"])
    assert ids.dtype == mask.dtype == np.int32 and ids.shape == mask.shape == (2, 77)
    assert ids[0, :6].tolist() == [0, 4, 11, 2, 1, 1] and (ids[0, 4:] == 1).all()
    assert ids[1, :6].tolist() == [0, 4, 11, 11, 2, 1]
    assert mask.sum(axis=1).tolist() == [4, 5] and mask[0, :4].all()


def test_roberta_truncates_to_77_keeping_eos(tiny_roberta):
    ids, mask = roberta_tokenizer(*tiny_roberta)(["a" + " dog" * 100])
    assert ids[0, 0] == 0 and ids[0, 76] == 2 and (ids[0, 2:76] == 11).all() and mask.all()


def test_roberta_file_errors(tiny_roberta, tmp_path):
    vocab_json, merges_txt = tiny_roberta
    with pytest.raises(TokenizerError, match="no such file"):
        roberta_tokenizer(tmp_path / "missing.json", merges_txt)
    with pytest.raises(TokenizerError, match="no such file"):
        roberta_tokenizer(vocab_json, tmp_path / "missing.txt")
    merges_txt.write_text("#version: 0.2\nĠ d x\n")
    with pytest.raises(TokenizerError, match="merges.txt:2: expected 'left right'"):
        roberta_tokenizer(vocab_json, merges_txt)
    vocab_json.write_text(json.dumps({"<s>": 0, "a": 1}))
    with pytest.raises(TokenizerError, match="special tokens missing"):
        roberta_tokenizer(vocab_json, merges_txt)
    vocab_json.write_text("not json")
    with pytest.raises(TokenizerError, match="not a JSON vocabulary"):
        roberta_tokenizer(vocab_json, merges_txt)
