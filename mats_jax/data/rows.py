"""Streaming row readers: every input file becomes an iterable of Records, never a list.

A malformed row is logged as ``file:line: reason`` and skipped; the count of skipped rows is
logged at the end and kept on :attr:`Rows.tally`. A missing input file is an error at once
(when the reader is made, not half-way through a preparation run). Files are read lazily, so
corpora of millions of rows (AudioTIA-style JSONL, optionally gzipped) stream in constant memory.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from mats_jax.data.records import FIELDS, REQUIRED_FIELDS, Record

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Tally:
    """What one pass over a :class:`Rows` skipped: malformed rows, and valid rows dropped on
    purpose.
    """

    malformed: int = 0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def skip(self, path: Path | str, line: int | str, reason: str) -> None:
        """Reports a malformed row as ``file:line: reason`` and counts it."""
        log.warning("%s:%s: %s", path, line, reason)
        self.malformed += 1

    def drop(self, reason: str) -> None:
        """Counts a well-formed row left out by design (e.g. it describes an evaluation clip)."""
        self.dropped[reason] += 1


class Rows(Iterable[Record]):
    """A re-iterable stream of Records read from files.

    Args:
      name: what the log lines call this stream (e.g. ``audiocaps/train``).
      files: every file the stream reads; all must exist when the stream is made.
      generate: yields the Records, reporting bad rows to the :class:`Tally` it is given.
    """

    def __init__(
        self, name: str, files: Sequence[Path], generate: Callable[[Tally], Iterator[Record]]
    ):
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{name}: missing input file(s): {', '.join(missing)}")
        self.name = name
        self.files = tuple(Path(f) for f in files)
        self._generate = generate
        self.tally = Tally()

    def __iter__(self) -> Iterator[Record]:
        self.tally = tally = Tally()
        yield from self._generate(tally)
        if tally.malformed:
            log.warning("%s: skipped %d malformed row(s)", self.name, tally.malformed)
        for reason, count in tally.dropped.items():
            log.info("%s: left out %d row(s): %s", self.name, count, reason)


def parse_rows(
    path: Path,
    rows: Iterable[tuple[int | str, Any]],
    parse: Callable[[Any], Iterable[Record]],
    tally: Tally,
) -> Iterator[Record]:
    """Applies ``parse`` to each ``(line, row)``; a row it rejects with ValueError is skipped."""
    for line, row in rows:
        try:
            records = list(parse(row))
        except ValueError as e:
            tally.skip(path, line, str(e))
            continue
        yield from records


def csv_rows(
    path: Path,
    tally: Tally,
    *,
    columns: Sequence[str],
    fieldnames: Sequence[str] | None = None,
    skipinitialspace: bool = False,
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(first line of the record, row)`` for each CSV record with exactly the header's fields.

    ``columns`` must all be in the header (a file without them is an error, not a row
    problem). ``fieldnames`` replaces a missing header line; lines starting with ``#`` are
    comments then (AudioSet segment files). Line numbers are physical lines of the file, so a
    quoted field spanning lines does not shift the numbers of later rows.
    """
    comments = fieldnames is not None
    first_line: list[int | None] = [None]  # physical line where the record being read starts

    def lines(f: IO[bytes]) -> Iterator[str]:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                tally.skip(path, number, f"not UTF-8 ({e.reason} at byte {e.start})")
                continue
            if comments and text.startswith("#"):
                continue
            if first_line[0] is None and text.strip():
                first_line[0] = number
            yield text

    with _open_binary(path) as f:
        reader = csv.DictReader(lines(f), fieldnames=fieldnames, skipinitialspace=skipinitialspace)
        header = list(reader.fieldnames or [])
        absent = [c for c in columns if c not in header]
        if absent:
            raise ValueError(f"{path}: expected column(s) {', '.join(absent)}; header is {header}")
        while True:
            first_line[0] = None
            try:
                row = next(reader, None)
            except csv.Error as e:
                tally.skip(path, first_line[0] or 0, f"CSV error: {e}")
                continue
            if row is None:
                return
            line = first_line[0] or 0
            if None in row:
                tally.skip(
                    path, line, f"{len(header) + len(row[None])} fields, expected {len(header)}"
                )
            elif None in row.values():
                n = sum(v is not None for v in row.values())
                tally.skip(path, line, f"{n} fields, expected {len(header)}")
            else:
                yield line, row


def jsonl_rows(path: Path, tally: Tally) -> Iterator[tuple[int, Any]]:
    """``(line, decoded JSON value)`` for each non-blank line; undecodable lines are skipped."""
    with _open_binary(path) as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                tally.skip(path, line, f"not UTF-8 ({e.reason} at byte {e.start})")
            except json.JSONDecodeError as e:
                tally.skip(path, line, f"invalid JSON: {e.msg} (column {e.colno})")


def read_jsonl(path: str | Path, *, source: str | None = None) -> Rows:
    """Records from a JSONL file (or ``.jsonl.gz``) in the Record schema, one object a line.

    Keys: ``text, task, instruction, answer, tag, source`` (``clip`` optional; other keys
    ignored). ``source`` supplies the source of rows that have none.
    """
    path = Path(path)

    def generate(tally: Tally) -> Iterator[Record]:
        yield from parse_rows(
            path, jsonl_rows(path, tally), lambda r: [Record.from_dict(r, source=source)], tally
        )

    return Rows(str(path), [path], generate)


def read_csv(path: str | Path, *, source: str | None = None) -> Rows:
    """Records from a CSV file with a header naming the Record fields (``source`` may be
    given instead of a column; ``clip`` optional; other columns ignored)."""
    path = Path(path)
    required = [f for f in REQUIRED_FIELDS if not (f == "source" and source is not None)]

    def parse(row: dict[str, str]) -> list[Record]:
        return [Record.from_dict({k: v for k, v in row.items() if k in FIELDS}, source=source)]

    def generate(tally: Tally) -> Iterator[Record]:
        yield from parse_rows(path, csv_rows(path, tally, columns=required), parse, tally)

    return Rows(str(path), [path], generate)


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed if its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
