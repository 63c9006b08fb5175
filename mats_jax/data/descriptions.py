"""Class descriptions: the CLAP text of label sources, in place of "The sound of dog.".

MATS trains classification sources on GPT-4-written descriptions of each class (never released).
`python -m mats_jax.data.describe` writes our own (the AudioSet ontology's human-written text
where a label maps to one, a local LLM for the rest); this module holds the pieces that need no
model: label lists, the ontology lookup, cleaning, the file format, and the prepare hook.

A descriptions file is JSONL in the original audio-free annotation format (`caption`,
`output`, `task`, `instruction`), one row per description, plus `origin` ("ontology" or "llm").
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mats_jax.data import records as R
from mats_jax.data.rows import Rows
from mats_jax.runtime.errors import InputError

ONTOLOGY, LLM = "ontology", "llm"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def read_labels(path: str | Path) -> list[tuple[str, str]]:
    """(label, mid) pairs of a label list: a text file of one label per line (mid ""), or a
    class_labels_indices CSV (`mid`, `display_name`; quotes around names are dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such label file")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "display_name" not in reader.fieldnames:
                raise InputError(f"{path}: a label CSV needs a 'display_name' column")
            pairs = [
                (r["display_name"].strip().strip("'\"").strip(), r.get("mid") or "") for r in reader
            ]
    else:
        pairs = [(line.strip(), "") for line in path.read_text().splitlines()]
    pairs = [(label, mid.strip()) for label, mid in pairs if label]
    if not pairs:
        raise InputError(f"{path}: no labels")
    return pairs


class Ontology:
    """The AudioSet ontology's descriptions, found by class name (case-insensitively) or mid."""

    def __init__(self, path: str | Path):
        try:
            entries = json.loads(Path(path).read_text())
            self._by_id = {e["id"]: e["description"].strip() for e in entries}
            self._by_name = {e["name"].lower(): e["description"].strip() for e in entries}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{path}: not an AudioSet ontology JSON ({e})") from None

    def lookup(self, label: str, mid: str = "") -> str | None:
        return self._by_name.get(label.lower()) or self._by_id.get(mid) or None


def clean(text: str) -> str:
    """The first sentence of a generation, stripped of whitespace and quotes ("" if none)."""
    text = " ".join(text.split()).strip().strip("\"'").strip()
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip() if text else ""


def annotation(label: str, text: str, origin: str) -> dict[str, str]:
    """One row of a descriptions file (the original annotation fields plus `origin`)."""
    return {
        "caption": text,
        "output": label,
        "task": R.CLASSIFICATION,
        "instruction": R.INSTRUCTIONS[R.CLASSIFICATION],
        "origin": origin,
    }


def read_descriptions(path: str | Path) -> dict[str, list[str]]:
    """label (lower-cased) -> its descriptions, from a descriptions file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such descriptions file")
    table: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label, text = row["output"], row["caption"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: not a row with 'output' and 'caption'") from None
        table.setdefault(label.strip().lower(), []).append(text)
    if not table:
        raise InputError(f"{path}: no descriptions")
    return table


def with_descriptions(rows: Rows, table: Mapping[str, Sequence[str]]) -> Rows:
    """`rows` with the CLAP text of each single-label classification record whose label has
    descriptions replaced by one of them, picked by the clip so that a clip keeps its text."""

    def generate(tally) -> Iterator[R.Record]:
        for record in rows._generate(tally):
            texts = table.get(record.answer.strip().lower())
            if record.task == R.CLASSIFICATION and texts:
                pick = zlib.crc32(f"{record.source}/{record.clip}".encode()) % len(texts)
                record = dataclasses.replace(record, text=texts[pick])
            yield record

    return Rows(rows.name, rows.files, generate)
