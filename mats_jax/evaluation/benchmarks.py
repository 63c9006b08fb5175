"""The evaluation benchmarks of the paper: where their metadata lives, what each clip should yield.

Each benchmark reads its own metadata CSV (the official file, or the shipped subsets of
`shared/data`) into `Example`s: one audio file and what a correct answer looks like (the class,
the reference captions, the annotators' answers). `--data` may name the CSV itself or a folder
holding one of the benchmark's known metadata files; audio is looked up by file name anywhere
under the audio folder (official layouts keep clips in `audio/` or `audio/foldN/`).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from mats_jax.clap.audio import SUPPORTED_SUFFIXES
from mats_jax.data.records import AUDIO_QA, SINGLE_EVENT, caption_tag
from mats_jax.runtime.errors import InputError

Kind = Literal["classification", "captioning", "qa"]


class BenchmarkError(InputError):
    pass


@dataclasses.dataclass(frozen=True)
class Example:
    """One question put to the model about one clip."""

    clip: str  # the clip's name in the metadata
    references: tuple[str, ...]  # the class; the reference captions; the annotators' answers
    question: str | None = None  # QA only


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    kind: Kind
    task: str  # the Listener task (prompt instruction)
    tag: str  # the dataset tag after </Speech>
    metadata_files: tuple[str, ...]  # looked for, in order, under a --data folder
    parse: Callable[[list[dict[str, str]]], list[Example]]
    clip_names: Callable[[str], tuple[str, ...]] = lambda clip: (clip,)  # file names to look for


def _classes(label_column: tuple[str, ...]) -> Callable[[list[dict[str, str]]], list[Example]]:
    def parse(rows: list[dict[str, str]]) -> list[Example]:
        column = next((c for c in label_column if c in rows[0]), None)
        if column is None:
            raise BenchmarkError(f"no label column (one of {', '.join(label_column)})")
        file_column = next(c for c in ("filename", "slice_file_name") if c in rows[0])
        return [Example(row[file_column], (class_name(row[column]),)) for row in rows]

    return parse


def class_name(label: str) -> str:
    """How a label is said in text: `dog_bark` -> `dog bark`."""
    return label.replace("_", " ").strip()


def _captions(rows: list[dict[str, str]]) -> list[Example]:
    if "caption_1" in rows[0]:  # Clotho: one row per clip, caption_1..caption_5
        columns = sorted(c for c in rows[0] if c.startswith("caption_"))
        return [Example(row["file_name"], tuple(row[c] for c in columns if row[c])) for row in rows]
    by_clip: dict[str, list[str]] = collections.defaultdict(list)  # AudioCaps: one row per caption
    for row in rows:
        by_clip[row["youtube_id"]].append(row["caption"])
    return [Example(clip, tuple(captions)) for clip, captions in by_clip.items()]


def _questions(rows: list[dict[str, str]]) -> list[Example]:
    """Clotho-AQA: one example per (clip, question), with every annotator's answer."""
    answers: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for row in rows:
        answers[(row["file_name"], row["QuestionText"])].append(row["answer"])
    return [Example(clip, tuple(a), question) for (clip, question), a in answers.items()]


def _youtube_names(youtube_id: str) -> tuple[str, ...]:
    """AudioCaps clips are saved as `ID` or `YID` (AudioSet style), with or without times
    appended.
    """
    return youtube_id, f"Y{youtube_id}"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "esc50",
            "classification",
            "cla_label",
            SINGLE_EVENT,
            ("labels.csv", "meta/esc50.csv", "esc50.csv"),
            _classes(("label", "category")),
        ),
        Benchmark(
            "us8k",
            "classification",
            "cla_label",
            SINGLE_EVENT,
            ("metadata/UrbanSound8K.csv", "UrbanSound8K.csv"),
            _classes(("class",)),
        ),
        Benchmark(
            "clotho",
            "captioning",
            "caption",
            caption_tag("clotho"),
            ("clotho_captions_evaluation.csv", "test.csv"),
            _captions,
        ),
        Benchmark(
            "audiocaps",
            "captioning",
            "caption",
            caption_tag("audiocaps"),
            ("test.csv",),
            _captions,
            _youtube_names,
        ),
        Benchmark(
            "clotho_aqa",
            "qa",
            "QA",
            AUDIO_QA,
            ("binary_test_eng.csv", "single_word_test.csv"),
            _questions,
        ),
    )
}


def metadata_file(benchmark: Benchmark, data: Path) -> Path:
    """`data` itself if it is a file, else the first of the benchmark's metadata files under it."""
    if data.is_file():
        return data
    if not data.is_dir():
        raise BenchmarkError(f"{data}: no such file or folder")
    for name in benchmark.metadata_files:
        if (data / name).is_file():
            return data / name
    raise BenchmarkError(
        f"{data}: none of {', '.join(benchmark.metadata_files)} "
        f"(the {benchmark.name} metadata) is there"
    )


def read_examples(benchmark: Benchmark, metadata: Path) -> list[Example]:
    with metadata.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise BenchmarkError(f"{metadata}: no rows")
    try:
        return benchmark.parse(rows)
    except (KeyError, StopIteration, BenchmarkError) as e:
        raise BenchmarkError(
            f"{metadata}: not {benchmark.name} metadata ({type(e).__name__}: {e}; "
            f"columns {', '.join(rows[0])})"
        ) from None


_TIMES = re.compile(
    r"(_\d+(\.\d+)?)+$"
)  # `_30`, `_30.000_40.000`: start (and end) appended to a clip id


def audio_index(folder: Path) -> dict[str, Path]:
    """Every audio file under `folder` (official layouts nest folds), by file name, by stem, and
    by stem without appended start/end times."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in SUPPORTED_SUFFIXES and path.is_file():
            for key in (path.name, path.stem, _TIMES.sub("", path.stem)):
                index.setdefault(key, path)
    return index


def find_audio(
    benchmark: Benchmark, examples: Iterable[Example], folder: Path
) -> tuple[dict[str, Path], list[str]]:
    """({clip: audio file}, [clips with no audio under `folder`])."""
    index = audio_index(folder)
    found, missing = {}, []
    for clip in dict.fromkeys(e.clip for e in examples):
        path = next((index[n] for n in benchmark.clip_names(clip) if n in index), None)
        if path is None:
            missing.append(clip)
        else:
            found[clip] = path
    return found, missing
