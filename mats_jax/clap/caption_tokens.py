"""Caption -> token ids for the two CLAP text towers, from local files only (no hub).

msclap-2023 (GPT-2 text tower): `AutoTokenizer('gpt2')` plus `add_special_tokens({'pad_token':
'!'})`, caption + " <|endoftext|>", right-padded with id 0 to 77. We rebuild it with tiktoken and
the GPT-2 BPE ranks that openai-whisper ships (`whisper/assets/gpt2.tiktoken`), because GPT-2's
tokenizer files are not on disk here. Two msclap quirks are kept on purpose:
- Registering "!" as a special token makes transformers split the text at every "!" before BPE,
  so "Wow!!" is [22017, 0, 0], not plain GPT-2's [22017, 3228]. We register "!" as a tiktoken
  special token (id 0) to get the same split.
- The attention mask marks the caption and EOS (1) and the padding (0); a literal "!" in the
  caption has id 0 yet mask 1, so the mask cannot be rebuilt from ids and is returned too.
msclap never truncates (`padding='max_length'` turns truncation off), so a caption over 77
tokens breaks its batching; we raise `TokenizerError` unless `truncate=True`, which keeps the
first 76 tokens and ends with EOS so the pooled token is still EOS.

LAION-CLAP (RoBERTa text tower): transformers' RobertaTokenizer built from the user's
vocab.json/merges.txt, called like laion_clap (`padding="max_length", truncation=True,
max_length=77`): <s> caption </s>, then pad id 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import tiktoken
import transformers
from tiktoken.load import load_tiktoken_bpe

from mats_jax.runtime.assets import gpt2_bpe_ranks_path
from mats_jax.runtime.errors import InputError

TEXT_LEN = 77
EOS = "<|endoftext|>"
EOS_ID = 50256
PAD_ID = 0  # "!", msclap's pad token
# GPT-2's pre-tokenizer regex (the same one transformers' ByteLevel pre-tokenizer uses).
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Tokenize = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


class TokenizerError(InputError):
    """Missing or malformed tokenizer files, or a caption that does not fit."""


@lru_cache(maxsize=4)
def gpt2_encoding(ranks_file: str | os.PathLike | None = None) -> tiktoken.Encoding:
    """GPT-2 byte-level BPE with msclap's specials: <|endoftext|> = 50256 and "!" = 0."""
    path = Path(ranks_file) if ranks_file is not None else gpt2_bpe_ranks_path()
    if not path.is_file():
        raise TokenizerError(f"{path}: no such file (GPT-2 BPE ranks)")
    try:
        ranks = load_tiktoken_bpe(str(path))
    except ValueError as e:
        raise TokenizerError(f"{path}: not a tiktoken ranks file ({e})") from None
    if len(ranks) != EOS_ID:
        raise TokenizerError(f"{path}: {len(ranks)} ranks, GPT-2 has {EOS_ID}")
    return tiktoken.Encoding(
        "gpt2_msclap",
        pat_str=GPT2_SPLIT,
        mergeable_ranks=ranks,
        special_tokens={EOS: EOS_ID, "!": PAD_ID},
    )


def msclap_tokenize(
    captions: Sequence[str],
    *,
    length: int = TEXT_LEN,
    truncate: bool = False,
    ranks_file: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (input_ids, attention_mask), each int32 [N, length], as msclap-2023 builds them.

    Raises TokenizerError for a caption longer than `length` tokens (EOS included) unless
    truncate=True, which keeps its first length - 1 tokens and then EOS.
    """
    encoding = gpt2_encoding(ranks_file)
    ids = np.full((len(captions), length), PAD_ID, np.int32)
    mask = np.zeros((len(captions), length), np.int32)
    for row, caption in enumerate(captions):
        tokens = encoding.encode(caption + " " + EOS, allowed_special="all")
        if len(tokens) > length:
            if not truncate:
                raise TokenizerError(
                    f"caption has {len(tokens)} tokens, more than {length} (msclap cannot embed "
                    f"it; pass truncate=True to cut it): {caption[:60]!r}"
                )
            tokens = tokens[: length - 1] + [EOS_ID]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def roberta_tokenizer(
    vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, *, length: int = TEXT_LEN
) -> Tokenize:
    """LAION-CLAP's RoBERTa tokenizer from local files, as a captions -> (ids, mask) function.

    Both outputs are int32 [N, length]: <s> caption </s> then <pad> (id 1 in roberta-base),
    captions cut to fit like laion_clap (`truncation=True, max_length=77`).
    """
    vocab_path, merges_path = Path(vocab_json), Path(merges_txt)
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise TokenizerError(f"{path}: no such file (RoBERTa vocab.json / merges.txt)")
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{vocab_path}: not a JSON vocabulary ({e})") from None
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{vocab_path}: expected a JSON object of token -> id")
    missing = [t for t in ("<s>", "</s>", "<pad>", "<unk>", "<mask>") if t not in vocab]
    if missing:
        raise TokenizerError(f"{vocab_path}: special tokens missing from the vocabulary: {missing}")
    merges = []
    for number, line in enumerate(merges_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#version"):
            continue
        pair = tuple(line.split(" "))
        if len(pair) != 2:
            raise TokenizerError(f"{merges_path}:{number}: expected 'left right', got {line!r}")
        merges.append(pair)
    tokenizer = transformers.RobertaTokenizer(vocab=vocab, merges=merges)

    def tokenize(captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = tokenizer(list(captions), padding="max_length", truncation=True, max_length=length)
        return (
            np.asarray(out["input_ids"], np.int32).reshape(len(captions), length),
            np.asarray(out["attention_mask"], np.int32).reshape(len(captions), length),
        )

    return tokenize
