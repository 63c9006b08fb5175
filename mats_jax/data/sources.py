"""Builders that turn the real public text data (``../shared/data``, see its README) into Records.

One function per source, ``builder(data_root, split) -> Rows``; :data:`SOURCES` lists them with
their splits. Evaluation data never reaches a training split, and the rule is by *audio clip*,
across datasets that share audio: AudioCaps and AudioSet are both YouTube clips, Clotho and
Clotho-AQA both Clotho files. A training split therefore leaves out every clip that is in any
evaluation split of its namespace (AudioCaps val/test and AudioSet eval; Clotho val/test and
Clotho-AQA val/test). That costs Clotho's development split the 424 clips that Clotho-AQA
evaluates on: a caption of an evaluation clip, embedded by CLAP, is a close stand-in for that
clip's audio, so training on it would leak the evaluation audio.

Label datasets have the evaluation fold the project evaluates on as ``test``: ESC-50 fold 4
(the fold of the clips in ``shared/data/audio/esc50``) and UrbanSound8K fold 10. Their texts are
made from class names, so a training text of class *dog* is the same string as a test text of
class *dog*; only the clips are disjoint. The label vocabularies of VGGSound, FSD50K, DCASE 2017
task 4 and TUT scenes have no clip lists: they give one training record per class.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from mats_jax.data import records as R
from mats_jax.data.rows import Rows, Tally, csv_rows, parse_rows

ESC50_EVAL_FOLD = "4"
URBANSOUND8K_EVAL_FOLD = "10"

_AUDIOCAPS = "captions/audiocaps/v1/{split}.csv"
_CLOTHO = "captions/clotho/{split}.csv"
_CLOTHO_AQA = (
    "captions/clotho_aqa/binary_{split}_eng.csv",
    "captions/clotho_aqa/single_word_{split}.csv",
)
_AUDIOSET_SEGMENTS = {
    "train": "captions/audioset/balanced_train_segments.csv",
    "test": "captions/audioset/eval_segments.csv",
}
_AUDIOSET_LABELS = "captions/audioset/class_labels_indices.csv"
_SEGMENT_FIELDS = ("YTID", "start_seconds", "end_seconds", "positive_labels")
_CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))

# The files naming each audio namespace's evaluation clips (read directly rather than through the
# builders, so that Clotho-AQA clips without a Clotho caption are held out too).
_EVAL_CLIP_FILES: dict[str, list[str]] = {
    "youtube": [
        _AUDIOCAPS.format(split="val"),
        _AUDIOCAPS.format(split="test"),
        _AUDIOSET_SEGMENTS["test"],
    ],
    "clotho": [_CLOTHO.format(split=s) for s in ("val", "test")]
    + [f.format(split=s) for s in ("val", "test") for f in _CLOTHO_AQA],
}
_EVAL_CLIP_REASON = "the clip is in an evaluation split"


def audiocaps(root: Path, split: str) -> Rows:
    """AudioCaps v1 captions, one record per caption (train 49,838; val 2,475; test 4,875)."""
    path = Path(root) / _AUDIOCAPS.format(split=split)

    def parse(row: dict[str, str]) -> list[R.Record]:
        clip = f"youtube:{row['youtube_id'].strip()}"
        return [
            R.caption(row["caption"].strip(), dataset="audiocaps", source="audiocaps", clip=clip)
        ]

    def generate(tally: Tally) -> Iterator[R.Record]:
        rows = csv_rows(path, tally, columns=("youtube_id", "caption"))
        yield from _without_eval_clips(
            root, "youtube", split, parse_rows(path, rows, parse, tally), tally
        )

    return Rows(f"audiocaps/{split}", [path, *_eval_files(root, "youtube", split)], generate)


def clotho(root: Path, split: str) -> Rows:
    """Clotho v2 captions, five records per clip (train = development, val, test = evaluation)."""
    path = Path(root) / _CLOTHO.format(split=split)

    def parse(row: dict[str, str]) -> list[R.Record]:
        clip = f"clotho:{row['file_name']}"
        return [
            R.caption(row[c].strip(), dataset="clotho", source="clotho", clip=clip)
            for c in _CLOTHO_CAPTIONS
        ]

    def generate(tally: Tally) -> Iterator[R.Record]:
        rows = csv_rows(path, tally, columns=("file_name", *_CLOTHO_CAPTIONS))
        yield from _without_eval_clips(
            root, "clotho", split, parse_rows(path, rows, parse, tally), tally
        )

    return Rows(f"clotho/{split}", [path, *_eval_files(root, "clotho", split)], generate)


def clotho_aqa(root: Path, split: str) -> Rows:
    """Clotho-AQA questions (yes/no and single-word), one record per question.

    The three annotator answers of a question become one majority answer (ties: the first
    given), in sentence case ("Yes", "Three"). The CLAP text is one of the Clotho captions of
    the same file, picked by a hash of the question, so that a clip's questions see different
    captions; questions on files with no Clotho caption are left out (and counted).
    """
    root = Path(root)
    paths = [root / f.format(split=split) for f in _CLOTHO_AQA]
    caption_files = [root / _CLOTHO.format(split=s) for s in ("train", "val", "test")]

    def generate(tally: Tally) -> Iterator[R.Record]:
        captions = _clotho_captions(caption_files)
        for path in paths:
            answers: dict[tuple[str, str], list[str]] = {}
            for line, row in csv_rows(path, tally, columns=("file_name", "QuestionText", "answer")):
                file_name, question, answer = (
                    row[c].strip() for c in ("file_name", "QuestionText", "answer")
                )
                if not (file_name and question and answer):
                    tally.skip(path, line, "empty file_name, QuestionText or answer")
                    continue
                answers.setdefault((file_name, question), []).append(answer)
            for (file_name, question), given in answers.items():
                texts = captions.get(file_name)
                if not texts:
                    tally.drop("no Clotho caption for the clip")
                    continue
                yield R.Record(
                    text=texts[zlib.crc32(question.encode()) % len(texts)],
                    task=R.QA,
                    instruction=question,
                    answer=collections.Counter(given).most_common(1)[0][0].capitalize(),
                    tag=R.AUDIO_QA,
                    source="clotho_aqa",
                    clip=f"clotho:{file_name}",
                )

    def generate_split(tally: Tally) -> Iterator[R.Record]:
        yield from _without_eval_clips(root, "clotho", split, generate(tally), tally)

    files = [*paths, *caption_files, *_eval_files(root, "clotho", split)]
    return Rows(f"clotho_aqa/{split}", files, generate_split)


def esc50(root: Path, split: str) -> Rows:
    """ESC-50 clips as single-label classification texts; ``test`` is fold 4, ``train`` the rest."""
    path = Path(root) / "captions/esc50/esc50.csv"

    def parse(row: dict[str, str]) -> list[R.Record]:
        if (row["fold"].strip() == ESC50_EVAL_FOLD) != (split == "test"):
            return []
        label = _snake_to_words(row["category"])
        return [
            R.classification(
                [label], tag=R.SINGLE_EVENT, source="esc50", clip=f"esc50:{row['filename']}"
            )
        ]

    def generate(tally: Tally) -> Iterator[R.Record]:
        yield from parse_rows(
            path, csv_rows(path, tally, columns=("filename", "fold", "category")), parse, tally
        )

    return Rows(f"esc50/{split}", [path], generate)


def urbansound8k(root: Path, split: str) -> Rows:
    """UrbanSound8K clips as single-label classification texts; ``test`` is fold 10."""
    path = Path(root) / "captions/urbansound8k/UrbanSound8K.csv"

    def parse(row: dict[str, str]) -> list[R.Record]:
        if (row["fold"].strip() == URBANSOUND8K_EVAL_FOLD) != (split == "test"):
            return []
        label = _snake_to_words(row["class"])
        clip = f"urbansound8k:{row['slice_file_name']}"
        return [R.classification([label], tag=R.SINGLE_EVENT, source="urbansound8k", clip=clip)]

    def generate(tally: Tally) -> Iterator[R.Record]:
        rows = csv_rows(path, tally, columns=("slice_file_name", "fold", "class"))
        yield from parse_rows(path, rows, parse, tally)

    return Rows(f"urbansound8k/{split}", [path], generate)


def audioset(root: Path, split: str) -> Rows:
    """AudioSet segments as multi-label texts (train = balanced_train 22,160; test = eval 20,371).

    Labels are ordered by class index, so one label set always reads the same way.
    """
    root = Path(root)
    path = root / _AUDIOSET_SEGMENTS[split]
    labels_path = root / _AUDIOSET_LABELS

    def generate(tally: Tally) -> Iterator[R.Record]:
        names: dict[str, tuple[int, str]] = {}
        for line, row in csv_rows(labels_path, tally, columns=("index", "mid", "display_name")):
            if not row["index"].strip().isdigit():
                tally.skip(labels_path, line, f"class index {row['index']!r} is not a number")
                continue
            names[row["mid"].strip()] = (int(row["index"]), row["display_name"].strip())

        def parse(row: dict[str, str]) -> list[R.Record]:
            mids = [m.strip() for m in row["positive_labels"].split(",") if m.strip()]
            unknown = [m for m in mids if m not in names]
            if unknown or not mids:
                raise ValueError(f"unknown label id(s) {unknown}" if unknown else "no labels")
            labels = [names[m][1] for m in sorted(set(mids), key=lambda m: names[m][0])]
            return [
                R.classification(
                    labels, tag=R.MULTI_EVENTS, source="audioset", clip=f"youtube:{row['YTID']}"
                )
            ]

        rows = csv_rows(
            path, tally, columns=_SEGMENT_FIELDS, fieldnames=_SEGMENT_FIELDS, skipinitialspace=True
        )
        yield from _without_eval_clips(
            root, "youtube", split, parse_rows(path, rows, parse, tally), tally
        )

    return Rows(
        f"audioset/{split}", [path, labels_path, *_eval_files(root, "youtube", split)], generate
    )


def wavcaps_soundbible(root: Path, split: str) -> Rows:
    """WavCaps' SoundBible captions (1,232, ChatGPT-rewritten); a pre-training set: train only."""
    path = Path(root) / "captions/wavcaps/SoundBible/sb_final.json"

    def parse(entry: dict[str, object]) -> list[R.Record]:
        if not isinstance(entry, dict) or not isinstance(entry.get("caption"), str):
            raise ValueError("no 'caption' string")
        clip = f"soundbible:{entry.get('id', '')}"
        return [
            R.caption(
                entry["caption"].strip(), dataset="wavcaps", source="wavcaps_soundbible", clip=clip
            )
        ]

    def generate(tally: Tally) -> Iterator[R.Record]:
        entries = json.loads(path.read_text(encoding="utf-8"))["data"]
        yield from parse_rows(
            path, ((f"data[{i}]", e) for i, e in enumerate(entries)), parse, tally
        )

    return Rows(f"wavcaps_soundbible/{split}", [path], generate)


def _vocabulary(
    file: str, source: str, tag: str, clean: Callable[[str], str]
) -> Callable[[Path, str], Rows]:
    """A builder of one classification record per class of a label list (no clips: train only)."""

    def build(root: Path, split: str) -> Rows:
        path = Path(root) / "captions/label_vocabularies" / file

        def parse(row: dict[str, str]) -> list[R.Record]:
            return [
                R.classification(
                    [clean(row["display_name"].strip().strip("'\""))], tag=tag, source=source
                )
            ]

        def generate(tally: Tally) -> Iterator[R.Record]:
            yield from parse_rows(
                path, csv_rows(path, tally, columns=("display_name",)), parse, tally
            )

        return Rows(f"{source}/{split}", [path], generate)

    build.__doc__ = f"{source}: one {tag} classification record per class of {file}."
    return build


def _snake_to_words(label: str) -> str:
    return label.strip().replace("_", " ")


vggsound = _vocabulary(
    "class_labels_indices_vgg.csv", "vggsound", R.SINGLE_EVENT, lambda s: s.replace("_ ", ", ")
)
# FSD50K spells AudioSet's "A, B" as "A_and_B"; undo it so names match AudioSet's.
fsd50k = _vocabulary(
    "class_labels_indices_fsd50k.csv",
    "fsd50k",
    R.MULTI_EVENTS,
    lambda s: s.replace("_and_", ", ").replace("_", " "),
)
dcase = _vocabulary("class_labels_indices_dcase.csv", "dcase", R.MULTI_EVENTS, lambda s: s)
tut = _vocabulary("class_labels_indices_tut.csv", "tut", R.SINGLE_EVENT, lambda s: s)


@dataclasses.dataclass(frozen=True)
class Source:
    """A real-data builder with its splits; ``eval_splits`` hold clips no training split may use."""

    build: Callable[[Path, str], Rows]
    splits: tuple[str, ...]
    eval_splits: tuple[str, ...] = ()


# What configs/mats_llama.py and mats_gpt2.py train on: the sources that can be rebuilt from
# public text, with their sampling ratios.
PAPER_MIXTURE = {
    "audiocaps": 1.0,
    "clotho": 1.0,
    "audioset": 1.0,
    "esc50": 0.2,
    "urbansound8k": 0.5,
    "clotho_aqa": 0.5,
    "wavcaps_soundbible": 0.3,
}

SOURCES: dict[str, Source] = {
    "audiocaps": Source(audiocaps, ("train", "val", "test"), ("val", "test")),
    "clotho": Source(clotho, ("train", "val", "test"), ("val", "test")),
    "clotho_aqa": Source(clotho_aqa, ("train", "val", "test"), ("val", "test")),
    "esc50": Source(esc50, ("train", "test"), ("test",)),
    "urbansound8k": Source(urbansound8k, ("train", "test"), ("test",)),
    "audioset": Source(audioset, ("train", "test"), ("test",)),
    "wavcaps_soundbible": Source(wavcaps_soundbible, ("train",)),
    "vggsound": Source(vggsound, ("train",)),
    "fsd50k": Source(fsd50k, ("train",)),
    "dcase": Source(dcase, ("train",)),
    "tut": Source(tut, ("train",)),
}


def build(name: str, root: str | Path, split: str) -> Rows:
    """The Records of one split of one real source (see :data:`SOURCES`)."""
    if name not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    if split not in source.splits:
        raise ValueError(
            f"source {name!r} has no split {split!r}; it has {', '.join(source.splits)}"
        )
    return source.build(Path(root), split)


def _eval_files(root: Path, namespace: str, split: str) -> list[Path]:
    """The files listing evaluation clips that a ``train`` split of ``namespace`` must avoid."""
    return [Path(root) / f for f in _EVAL_CLIP_FILES[namespace]] if split == "train" else []


def _eval_clips(root: Path, namespace: str) -> set[str]:
    """Every evaluation clip of a namespace, as ``namespace:id`` (read leniently: ids only)."""
    clips = set()
    for file in _eval_files(root, namespace, "train"):
        with open(file, encoding="utf-8-sig", newline="") as f:
            if file.name.endswith("_segments.csv"):
                clips.update(
                    f"youtube:{row[0]}"
                    for row in csv.reader(f)
                    if row and not row[0].startswith("#")
                )
            else:
                column = "youtube_id" if namespace == "youtube" else "file_name"
                clips.update(
                    f"{namespace}:{row[column]}" for row in csv.DictReader(f) if row.get(column)
                )
    return clips


def _without_eval_clips(
    root: Path, namespace: str, split: str, records: Iterable[R.Record], tally: Tally
) -> Iterator[R.Record]:
    """``records``, less those of evaluation clips when ``split`` is ``train``."""
    held_out = _eval_clips(root, namespace) if split == "train" else set()
    for record in records:
        if record.clip in held_out:
            tally.drop(_EVAL_CLIP_REASON)
        else:
            yield record


def _clotho_captions(files: list[Path]) -> dict[str, list[str]]:
    """file_name -> its Clotho captions (the first file naming a clip wins)."""
    captions: dict[str, list[str]] = {}
    for file in files:
        with open(file, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                texts = [row[c].strip() for c in _CLOTHO_CAPTIONS if (row.get(c) or "").strip()]
                captions.setdefault(row.get("file_name") or "", texts)
    return captions
