"""MATS's prompt layout, token by token (docs/formats.md).

    [BOS] "USER: <Speech>" <prefix_length audio embeddings>
        "</Speech> [tag] instruction\\nASSISTANT:"
    answer [EOS]                                        (training only)

The part before the audio is the same for every example, so it is a shared `head` and the audio
always sits at the same positions; everything after it (the `tail`) varies and is padded. Text
parts are tokenised without special tokens. The loss covers the answer and its EOS only.

Two layouts share one tokenisation (`PromptBuilder.example`):

- unpacked (`training_batch`, the reference): one example per row, the tail right-padded to
  `tail_length`;
- packed (`packed_batch`): several examples back to back in rows of one static length, each with
  its own head, prefix and tail, told apart by segment ids (attention never crosses them) and
  with positions restarting at 0, so every example sees exactly what it sees unpacked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.struct
import numpy as np

HEAD_TEXT = "USER: <Speech>"
MAX_ANSWER_TOKENS = 150


def tail_text(instruction: str, tag: str = "") -> str:
    """The text between the audio and the answer; an empty tag leaves no double space."""
    return " ".join(part for part in ("</Speech>", tag, instruction) if part) + "\nASSISTANT:"


@flax.struct.dataclass
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


@flax.struct.dataclass
class InferenceBatch:
    """head [H] shared; tail [B, L] left-padded (so generation continues from aligned ends)."""

    head: np.ndarray
    tail: np.ndarray
    tail_mask: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One tokenised training example: tail [n] int32 = prompt ids, answer ids (cut), EOS;
    tail[answer_start:] are the targets (answer and EOS)."""

    tail: np.ndarray
    answer_start: int


@flax.struct.dataclass
class PackedBatch:
    """R rows of length T holding at most M examples each (numpy, ready to shard).

    tokens [R, T] int32: ids (pad at prefix and padding positions). segments [R, T] int32: 1..k
    for the row's examples in order, 0 at padding. positions [R, T] int32: position inside the
    example (0 at padding). prefix_slot [R, T] int32: e * prefix_length + p at prefix position p
    of the row's e-th example (0-based), -1 elsewhere. loss_mask [R, T] bool: the position's
    token is a target (answer and EOS), predicted by the position before it. examples [R, M]
    bool: which example slots of the row are in use (CLAP rows [R, M] follow the same slots).
    predictors [R, K] int32: the positions that predict a target (each one before a loss_mask
    position), in order, then -1: the only positions the LM head runs on (K bounds a row's
    targets; answers are short, so K is a fraction of T).
    """

    tokens: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    prefix_slot: np.ndarray
    loss_mask: np.ndarray
    examples: np.ndarray
    predictors: np.ndarray


class PromptBuilder:
    """Tokenises MATS prompts for a given LLM tokenizer (transformers API)."""

    def __init__(
        self,
        tokenizer,
        *,
        tail_length: int,
        max_answer_tokens: int = MAX_ANSWER_TOKENS,
        prefix_length: int = 0,
    ):
        """prefix_length: the number of audio embeddings per example (the mapper's), needed only
        by the packed layout; 0 = unknown."""
        self.tokenizer = tokenizer
        self.tail_length = tail_length
        self.max_answer_tokens = max_answer_tokens
        self.prefix_length = prefix_length
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        if self.bos is None or self.eos is None:
            raise ValueError("the LLM tokenizer must define BOS and EOS tokens")
        self.head = np.asarray([self.bos, *self._ids(HEAD_TEXT)], np.int32)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def example(self, instruction: str, tag: str, answer: str) -> Example:
        """The tail of one training example: prompt ids, the answer cut to `max_answer_tokens`
        and to what fits in `tail_length` (EOS kept), EOS; a prompt that leaves no room for the
        EOS is a ValueError."""
        prompt = self._ids(tail_text(instruction, tag))
        room = min(self.max_answer_tokens, self.tail_length - len(prompt) - 1)
        if room < 0:
            raise ValueError(
                f"the prompt alone takes {len(prompt)} tokens, "
                f"tail_length is {self.tail_length}: {instruction!r}"
            )
        ids = prompt + self._ids(answer)[:room] + [self.eos]
        return Example(np.asarray(ids, np.int32), len(prompt))

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
            try:
                example = self.example(instruction, tag, answer)
            except ValueError as error:
                raise ValueError(f"example {i}: {error}") from None
            n_ids = len(example.tail)
            tail[i, :n_ids] = example.tail
            tail_mask[i, :n_ids] = True
            loss_mask[i, example.answer_start : n_ids] = True
        return TrainingBatch(self.head, tail, tail_mask, loss_mask)

    def _packed_prefix_length(self) -> int:
        if self.prefix_length <= 0:
            raise ValueError(
                "the packed layout needs the prefix length: build the PromptBuilder with "
                "prefix_length=<the mapper's prefix_length>"
            )
        return self.prefix_length

    def example_length(self, example: Example) -> int:
        """Positions one example takes in a packed row: head, prefix, tail."""
        return len(self.head) + self._packed_prefix_length() + len(example.tail)

    @staticmethod
    def example_targets(example: Example) -> int:
        """Target tokens of one example (answer and EOS)."""
        return len(example.tail) - example.answer_start

    def packed_batch(
        self,
        rows: Sequence[Sequence[Example]],
        *,
        row_length: int,
        max_per_row: int,
        max_targets_per_row: int = 0,
    ) -> PackedBatch:
        """Each row's examples back to back from position 0 (head, prefix, tail each), the rest
        padding. An example that does not fit its row, more than `max_per_row` examples or more
        than `max_targets_per_row` targets (0: the row's length) in a row, is a ValueError
        naming the row."""
        prefix_length = self._packed_prefix_length()
        shape = (len(rows), row_length)
        tokens = np.full(shape, self.pad, np.int32)
        segments = np.zeros(shape, np.int32)
        positions = np.zeros(shape, np.int32)
        prefix_slot = np.full(shape, -1, np.int32)
        loss_mask = np.zeros(shape, bool)
        examples = np.zeros((len(rows), max_per_row), bool)
        targets_bound = max_targets_per_row or row_length
        predictors = np.full((len(rows), targets_bound), -1, np.int32)
        head = len(self.head)
        for r, row in enumerate(rows):
            if len(row) > max_per_row:
                raise ValueError(f"row {r}: {len(row)} examples, max_per_row is {max_per_row}")
            at = scored = 0
            for e, example in enumerate(row):
                length = self.example_length(example)
                if at + length > row_length:
                    raise ValueError(
                        f"row {r}: example {e} ({length} positions) does not fit: it would end at "
                        f"{at + length}, row_length is {row_length}"
                    )
                span = slice(at, at + length)
                tail_at = at + head + prefix_length
                tokens[r, at : at + head] = self.head
                tokens[r, tail_at : at + length] = example.tail
                segments[r, span] = e + 1
                positions[r, span] = np.arange(length)
                prefix_slot[r, at + head : tail_at] = e * prefix_length + np.arange(prefix_length)
                loss_mask[r, tail_at + example.answer_start : at + length] = True
                examples[r, e] = True
                targets = self.example_targets(example)
                if scored + targets > targets_bound:
                    raise ValueError(
                        f"row {r}: example {e} brings the row to {scored + targets} targets, "
                        f"max_targets_per_row is {targets_bound}"
                    )
                first = tail_at + example.answer_start - 1  # predicts the first target
                predictors[r, scored : scored + targets] = np.arange(first, first + targets)
                scored += targets
                at += length
        return PackedBatch(
            tokens, segments, positions, prefix_slot, loss_mask, examples, predictors
        )

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
