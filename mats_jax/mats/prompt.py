"""MATS's prompt layout, token by token (docs/formats.md).

    [BOS] "USER: <Speech>" <prefix_length audio embeddings>
        "</Speech> [tag] instruction\\nASSISTANT:"
    answer [EOS]                                        (training only)

The part before the audio is the same for every example, so it is a shared `head` and the audio
always sits at the same positions; everything after it (the `tail`) varies and is padded. Text
parts are tokenised without special tokens. The loss covers the answer and its EOS only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

HEAD_TEXT = "USER: <Speech>"
MAX_ANSWER_TOKENS = 150


def tail_text(instruction: str, tag: str = "") -> str:
    """The text between the audio and the answer; an empty tag leaves no double space."""
    return " ".join(part for part in ("</Speech>", tag, instruction) if part) + "\nASSISTANT:"


@dataclasses.dataclass(frozen=True)
class TrainingBatch:
    """Arrays for one training batch (numpy, ready to shard).

    head [H]: BOS + head text ids, shared by the batch. tail [B, L]: tail ids then answer + EOS,
    right-padded. tail_mask [B, L]: real tokens. loss_mask [B, L]: positions whose token is a
    target (answer and EOS). Every position of the full sequence predicts the next one.
    """

    head: np.ndarray
    tail: np.ndarray
    tail_mask: np.ndarray
    loss_mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class InferenceBatch:
    """head [H] shared; tail [B, L] left-padded (so generation continues from aligned ends)."""

    head: np.ndarray
    tail: np.ndarray
    tail_mask: np.ndarray


class PromptBuilder:
    """Tokenises MATS prompts for a given LLM tokenizer (transformers API)."""

    def __init__(self, tokenizer, *, tail_length: int, max_answer_tokens: int = MAX_ANSWER_TOKENS):
        self.tokenizer = tokenizer
        self.tail_length = tail_length
        self.max_answer_tokens = max_answer_tokens
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        if self.bos is None or self.eos is None:
            raise ValueError("the LLM tokenizer must define BOS and EOS tokens")
        self.head = np.asarray([self.bos, *self._ids(HEAD_TEXT)], np.int32)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def training_batch(
        self, instructions: Sequence[str], tags: Sequence[str], answers: Sequence[str]
    ) -> TrainingBatch:
        """Answers are cut to `max_answer_tokens` and to what fits in `tail_length` (EOS kept);
        a prompt that leaves no room for the EOS is an error naming the example."""
        n = len(instructions)
        tail = np.full((n, self.tail_length), self.pad, np.int32)
        tail_mask = np.zeros((n, self.tail_length), bool)
        loss_mask = np.zeros((n, self.tail_length), bool)
        for i, (instruction, tag, answer) in enumerate(zip(instructions, tags, answers)):
            prompt = self._ids(tail_text(instruction, tag))
            room = min(self.max_answer_tokens, self.tail_length - len(prompt) - 1)
            if room < 0:
                raise ValueError(
                    f"example {i}: the prompt alone takes {len(prompt)} tokens, "
                    f"tail_length is {self.tail_length}: {instruction!r}"
                )
            ids = prompt + self._ids(answer)[:room] + [self.eos]
            tail[i, : len(ids)] = ids
            tail_mask[i, : len(ids)] = True
            loss_mask[i, len(prompt) : len(ids)] = True
        return TrainingBatch(self.head, tail, tail_mask, loss_mask)

    def inference_batch(self, instructions: Sequence[str], tags: Sequence[str]) -> InferenceBatch:
        prompts = [
            self._ids(tail_text(instruction, tag)) for instruction, tag in zip(instructions, tags)
        ]
        width = max(map(len, prompts))
        tail = np.full((len(prompts), width), self.pad, np.int32)
        tail_mask = np.zeros((len(prompts), width), bool)
        for i, ids in enumerate(prompts):
            tail[i, width - len(ids) :] = ids
            tail_mask[i, width - len(ids) :] = True
        return InferenceBatch(self.head, tail, tail_mask)
