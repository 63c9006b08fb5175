"""First-fit packing of a stream of examples into batches of fixed-length rows.

A batch is ``rows`` rows of ``row_length`` positions each, several examples per row, no example
split across rows. :func:`pack` fills one batch from the examples carried over from the previous
batch and from the stream, and returns the batch and the new carry; it is pure (a function of
the carry and of the stream's order only), so the position in the stream plus the carry is the
whole state between batches. The rule:

1. The carried examples are placed first, in order, each into the first row with room (enough
   free positions, fewer than ``max_per_row`` examples and, when ``max_targets_per_row`` is
   set, enough room for the example's targets). The carry never holds more than
   ``rows`` examples and the batch starts empty, so every carried example is placed in the very
   next batch: no example waits more than one batch.
2. Then examples are pulled from the stream, each placed into the first row with room; one that
   fits no row is carried over (in stream order) to the next batch.
3. Pulling stops when every row is full (``row_length`` positions, ``max_per_row``
   examples or ``max_targets_per_row`` targets), when ``lookahead`` consecutive pulls did not
   fit, when the carry holds ``rows`` examples, or when the stream ends.

No example is lost or duplicated: every example pulled is in this batch or in the carry. An
example longer than ``row_length`` cannot be placed in any row and is a ``ValueError`` naming it
(the caller cuts examples so that this never happens); so is one with more targets than
``max_targets_per_row``.

Why a bound on targets: the LM head (a vocabulary-wide matrix and softmax) runs only on the
positions that predict a target, gathered into a static [rows, max_targets_per_row] block; the
bound keeps that block small (answers are short) while never dropping a target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclasses.dataclass(frozen=True)
class Example(Generic[K]):
    """An example to pack: an opaque ``key`` (what the caller needs to find it again, e.g. its
    stream index), its number of positions and of target tokens (counted only against
    ``FirstFit.max_targets_per_row``)."""

    key: K
    length: int
    targets: int = 0


@dataclasses.dataclass(frozen=True)
class Packed(Generic[K]):
    """One packed batch: ``rows[r]`` are the examples of row r, in placement order; ``carry``
    the examples that go first into the next batch; ``pulled`` how many examples this batch took
    from the stream (placed or carried)."""

    rows: list[list[Example[K]]]
    carry: list[Example[K]]
    pulled: int

    def row_lengths(self) -> list[list[int]]:
        return [[e.length for e in row] for row in self.rows]


@dataclasses.dataclass(frozen=True)
class FirstFit:
    """The packing rule's parameters (see module doc)."""

    rows: int
    row_length: int
    max_per_row: int
    lookahead: int = 64
    max_targets_per_row: int = 0  # 0: no bound

    def __post_init__(self):
        for name in ("rows", "row_length", "max_per_row", "lookahead"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_targets_per_row < 0:
            raise ValueError(f"max_targets_per_row must be >= 0, got {self.max_targets_per_row}")

    def pack(self, carry: Sequence[Example[K]], stream: Iterator[Example[K]]) -> Packed[K]:
        """One batch from the ``carry`` of the previous batch, then the ``stream`` (pulled only
        as far as the rule needs; an ended stream ends the batch early)."""
        free = [self.row_length] * self.rows
        free_targets = [self.max_targets_per_row or self.row_length] * self.rows
        rows: list[list[Example[K]]] = [[] for _ in range(self.rows)]
        open_rows = list(range(self.rows))  # rows that may still take an example, in order

        def place(example: Example[K]) -> bool:
            if example.length > self.row_length:
                raise ValueError(
                    f"example {example.key!r} has {example.length} positions, more than "
                    f"row_length {self.row_length}: cut it before packing"
                )
            if example.length < 1:
                raise ValueError(f"example {example.key!r} has {example.length} positions")
            if self.max_targets_per_row and example.targets > self.max_targets_per_row:
                raise ValueError(
                    f"example {example.key!r} has {example.targets} targets, more than "
                    f"max_targets_per_row {self.max_targets_per_row}: cut it before packing"
                )
            for i, r in enumerate(open_rows):
                if free[r] >= example.length and free_targets[r] >= example.targets:
                    rows[r].append(example)
                    free[r] -= example.length
                    free_targets[r] -= example.targets
                    if 0 in (free[r], free_targets[r]) or len(rows[r]) == self.max_per_row:
                        del open_rows[i]
                    return True
            return False

        left: list[Example[K]] = [e for e in carry if not place(e)]
        if left:  # only from a carry this rule did not make (a hand-made state)
            raise ValueError(f"a carry of {len(carry)} examples does not fit one batch")
        misses = pulled = 0
        while open_rows and misses < self.lookahead and len(left) < self.rows:
            example = next(stream, None)
            if example is None:
                break
            pulled += 1
            if place(example):
                misses = 0
            else:
                left.append(example)
                misses += 1
        return Packed(rows, left, pulled)


def efficiency(row_lengths: Iterable[Iterable[int]], row_length: int) -> float:
    """Real positions over computed positions: the sum of the examples' lengths over
    ``rows × row_length`` (1.0 when every position holds a token of some example)."""
    row_lengths = [list(row) for row in row_lengths]
    if not row_lengths:
        return 0.0
    return sum(map(sum, row_lengths)) / (len(row_lengths) * row_length)
