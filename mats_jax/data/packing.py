"""First-fit packing of a stream of examples into batches of fixed-length rows.

A batch is ``rows`` rows of ``row_length`` positions each, several examples per row, no example
split across rows. :func:`pack` fills one batch from the examples carried over from the previous
batch and from the stream, and returns the batch and the new carry; it is pure (a function of
the carry and of the stream's order only), so the position in the stream plus the carry is the
whole state between batches. The rule:

1. The carried examples are placed first, in order, each into the first row with room (enough
   free positions and fewer than ``max_per_row`` examples). The carry never holds more than
   ``rows`` examples and the batch starts empty, so every carried example is placed in the very
   next batch: no example waits more than one batch.
2. Then examples are pulled from the stream, each placed into the first row with room; one that
   fits no row is carried over (in stream order) to the next batch.
3. Pulling stops when every row is full (``row_length`` positions or ``max_per_row``
   examples), when ``lookahead`` consecutive pulls did not fit, when the carry holds ``rows``
   examples, or when the stream ends.

No example is lost or duplicated: every example pulled is in this batch or in the carry. An
example longer than ``row_length`` cannot be placed in any row and is a ``ValueError`` naming it
(the caller cuts examples so that this never happens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclasses.dataclass(frozen=True)
class Example(Generic[K]):
    """An example to pack: an opaque ``key`` (what the caller needs to find it again, e.g. its
    stream index) and its number of positions."""

    key: K
    length: int


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

    def __post_init__(self):
        for name in ("rows", "row_length", "max_per_row", "lookahead"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def pack(self, carry: Sequence[Example[K]], stream: Iterator[Example[K]]) -> Packed[K]:
        """One batch from the ``carry`` of the previous batch, then the ``stream`` (pulled only
        as far as the rule needs; an ended stream ends the batch early)."""
        free = [self.row_length] * self.rows
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
            for i, r in enumerate(open_rows):
                if free[r] >= example.length:
                    rows[r].append(example)
                    free[r] -= example.length
                    if free[r] == 0 or len(rows[r]) == self.max_per_row:
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
