"""The one record type of the text corpus, and the MATS task vocabulary (docs/formats.md).

MATS trains on text only: the CLAP *text* embedding of an audio description stands in for the
audio, and the LLM learns to produce an answer after a task tag and an instruction. Every
source (captions, class labels, QA pairs, a user's AudioTIA-style corpus) is turned into the
same :class:`Record`, so the trainer never needs to know where a row came from.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mats_jax.runtime.errors import InputError

SCHEMA_VERSION = 1
"""Bumped whenever the serialised fields of :class:`Record` change (prepared corpora carry it)."""
MANIFEST = "manifest.json"
"""The file naming a prepared corpus's sources, splits, counts and schema version."""

# Tasks, named as in the original code.
CAPTION = "caption"
CLASSIFICATION = "cla_label"
MUSIC = "music"
QA = "qa"
TASKS = (CAPTION, CLASSIFICATION, MUSIC, QA)

# Fixed instructions of the paper; a QA record's instruction is its question.
INSTRUCTIONS = {
    CAPTION: "Describe the following audio in a caption.",
    CLASSIFICATION: "Identify the sounds in the audio clip, only display audio tags.",
    MUSIC: "Listen to this music clip and describe the music.",
}
# How `generate --task` and the Listener spell the tasks (the original evaluation configs' names).
COMMAND_LINE_TASKS = {
    CAPTION: "caption",
    CLASSIFICATION: "cla_label",
    MUSIC: "music_caption",
    QA: "QA",
}


# The task names of the original's annotation files (its `task_transpose`): each is one of ours.
ORIGINAL_TASKS = {
    **dict.fromkeys(("audiocaption", "caption"), CAPTION),
    **dict.fromkeys(
        (
            "cla_label",
            "instrument_label",
            "genres_label",
            "vocal_label",
            "scene_label",
            "emotion event",
        ),
        CLASSIFICATION,
    ),
    **dict.fromkeys(("audio_qa", "open-ended question", "QA", "qa"), QA),
    **dict.fromkeys(("musiccaption", "captioning", "music_description", "music"), MUSIC),
}


def task_named(name: str) -> str:
    """The task a record or command-line name stands for (ValueError for any other name)."""
    if name in TASKS:
        return name
    for task, spelling in COMMAND_LINE_TASKS.items():
        if name == spelling:
            return task
    raise InputError(f"task {name!r} is not one of {', '.join(COMMAND_LINE_TASKS.values())}")


def instruction_for(task: str, question: str | None) -> str:
    """The prompt text of a task: its paper instruction, or the question for QA."""
    task = task_named(task)
    if task != QA:
        return INSTRUCTIONS[task]
    if not question:
        raise InputError("task QA needs a question")
    return question


# Dataset tags that follow `</Speech>` in the prompt: they tell the model which answer style
# (caption vocabulary, single or multiple labels, QA) a benchmark expects.
SINGLE_EVENT = "[single event]"
MULTI_EVENTS = "[multi events]"
SCENE_EVENT = "[scene event]"
AUDIO_CAPTION = "[audio caption]"  # caption sets without a benchmark of their own (WavCaps, MACS)
MUSIC_CAPTION = "[music caption]"
AUDIO_QA = "[audio qa]"
OPEN_ENDED = "[open ended]"


def caption_tag(dataset: str) -> str:
    """The caption tag of one dataset, e.g. ``[audio caption audiocaps]`` (paper style)."""
    return f"[audio caption {dataset}]"


_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TAG = re.compile(r"\[[^\[\]]+\]")


@dataclasses.dataclass(frozen=True)
class Record:
    """One training or evaluation example.

    Attributes:
      text: what CLAP embeds in place of the audio (an audio description).
      task: one of :data:`TASKS`.
      instruction: the prompt text after the tag (the question, for QA).
      answer: what the LLM learns to produce (the loss covers it and EOS only).
      tag: dataset tag such as ``[single event]``, or ``""`` for none.
      source: corpus source name; the key of per-source mixing ratios (a file-safe name).
      clip: the audio item this text describes, ``namespace:id`` (``youtube:…``,
        ``clotho:…``), or ``""`` when there is none (label vocabularies). Not one of the
        issue's six fields: it is what lets evaluation group reference captions per clip
        and lets us prove that no evaluation clip reaches a training split.
    """

    text: str
    task: str
    instruction: str
    answer: str
    tag: str
    source: str
    clip: str = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not isinstance(getattr(self, field.name), str):
                raise ValueError(f"field {field.name!r} must be a string")
        for name in ("text", "instruction", "answer"):
            if not getattr(self, name).strip():
                raise ValueError(f"empty {name!r}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r} (expected one of {', '.join(TASKS)})")
        if self.tag and not _TAG.fullmatch(self.tag):
            raise ValueError(f"tag {self.tag!r} is not of the form '[words]'")
        if not _SOURCE_NAME.fullmatch(self.source):
            raise ValueError(f"source {self.source!r} is not a file-safe name ([A-Za-z0-9_.-])")

    def to_json(self) -> str:
        """One line of JSON (UTF-8 text kept as is): the on-disk form in JSONL and array_record."""
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any], *, source: str | None = None) -> Record:
        """A record from a mapping with the schema's keys; extra keys are ignored.

        ``source`` fills in a missing ``source`` key (a user file holding a single source).
        Raises ValueError naming what is wrong.
        """
        if not isinstance(row, Mapping):
            raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        values = dict(row)
        if source is not None:
            values.setdefault("source", source)
        missing = [f for f in REQUIRED_FIELDS if f not in values]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(**{f: values[f] for f in FIELDS if f in values})

    @classmethod
    def from_json(cls, data: str | bytes) -> Record:
        return cls.from_dict(json.loads(data))


FIELDS = tuple(f.name for f in dataclasses.fields(Record))
REQUIRED_FIELDS = tuple(
    f.name for f in dataclasses.fields(Record) if f.default is dataclasses.MISSING
)


def label_text(labels: Sequence[str]) -> str:
    """The CLAP text of a classification example: a short natural description of its labels.

    ``["Dog"]`` -> ``"The sound of dog."``; ``["Speech", "Dog", "Music"]`` ->
    ``"Sounds of speech, dog and music."``. Only the first synonym of a display name is used
    (``"Male speech, man speaking"`` -> ``"male speech"``), so that commas inside names do not
    turn one label into several; names are lower-cased as in CLAP's zero-shot prompts.
    """
    if not labels:
        raise ValueError("no labels")
    names = [label.split(",")[0].strip().lower() for label in labels]
    if len(names) == 1:
        return f"The sound of {names[0]}."
    return f"Sounds of {', '.join(names[:-1])} and {names[-1]}."


def label_answer(labels: Sequence[str]) -> str:
    """The answer of a classification example: the full label names, ``"A, B, C"``.

    The answer keeps each dataset's own display names (synonyms included), which is what
    classification benchmarks compare the generated tags against.
    """
    if not labels:
        raise ValueError("no labels")
    return ", ".join(labels)


def classification(labels: Sequence[str], *, tag: str, source: str, clip: str = "") -> Record:
    """A ``cla_label`` record: text from :func:`label_text`, answer from :func:`label_answer`."""
    return Record(
        text=label_text(labels),
        task=CLASSIFICATION,
        instruction=INSTRUCTIONS[CLASSIFICATION],
        answer=label_answer(labels),
        tag=tag,
        source=source,
        clip=clip,
    )


def caption(text: str, *, dataset: str, source: str, clip: str = "") -> Record:
    """A caption record: the caption is both the CLAP text and the answer (as in MATS)."""
    return Record(
        text=text,
        task=CAPTION,
        instruction=INSTRUCTIONS[CAPTION],
        answer=text,
        tag=caption_tag(dataset),
        source=source,
        clip=clip,
    )
