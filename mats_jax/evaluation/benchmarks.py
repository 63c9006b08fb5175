"""The evaluation benchmarks of the paper: where their metadata lives, what each clip should yield.

Each benchmark reads its official metadata layout (a CSV or tab-separated file, a JSON list, or,
for datasets whose only metadata is their folder and file names, the audio folder itself) into
`Example`s: one audio file and what a correct answer looks like (the class or classes, the
reference captions, the annotators' answers, the right choice). The original code's annotation
JSON (a list of `{"audio_id", "output", "task", "instruction"}`) is read for every benchmark too,
since that is what its users have. `--data` may name the metadata itself or a folder holding one
of the benchmark's known metadata files; audio is looked up by relative path or by file name
anywhere under the audio folder (official layouts keep clips in `audio/`, `audio/foldN/`, ...).

Each benchmark keeps the dataset tag of the original eval config (`MATS-LLaMA/configs/eval/`);
every classification set is asked with the `cla_label` instruction, as the original's annotation
tasks (`genres_label`, `vocal_label`, `scene_label`, `emotion event`, ...) all map to it.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from mats_jax.clap.audio import SUPPORTED_SUFFIXES
from mats_jax.data.records import (
    AUDIO_QA,
    MULTI_EVENTS,
    MUSIC_CAPTION,
    OPEN_ENDED,
    SINGLE_EVENT,
    caption_tag,
)
from mats_jax.runtime.errors import InputError

Kind = Literal["classification", "captioning", "qa"]  # how the model is asked
Scorer = Literal["classification", "multilabel", "captioning", "qa", "choice", "chat"]


class BenchmarkError(InputError):
    pass


@dataclasses.dataclass(frozen=True)
class Example:
    """One question put to the model about one clip."""

    clip: str  # the clip's name (or path) in the metadata
    references: tuple[str, ...]  # the class(es); the captions; the annotators' answers; the choice
    question: str | None = None  # the prompt of QA-kind benchmarks
    choices: tuple[str, ...] = ()  # multiple choice only
    # the metadata row itself, for benchmarks whose prediction files echo it back (MMAU, AIR-Bench)
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)


Rows = list[dict[str, Any]]


def _plain_names(clip: str) -> tuple[str, ...]:
    """A clip as named in the metadata, as a relative path, and by its file name alone."""
    path = PurePosixPath(clip)
    return clip, str(path), path.name


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    kind: Kind
    task: str  # the Listener task (prompt instruction)
    tag: str  # the dataset tag after </Speech>
    metadata_files: tuple[str, ...]  # looked for, in order, under a --data folder
    parse: Callable[[Rows], list[Example]]
    clip_names: Callable[[str], tuple[str, ...]] = _plain_names  # file names to look for
    scorer: Scorer | None = None  # how the texts are scored (default: as `kind` says)
    columns: tuple[str, ...] = ()  # the column names of a metadata file without a header line
    delimiter: str = ","
    listing: bool = False  # the dataset's metadata is its folder: a --data folder is read as one

    @property
    def scoring(self) -> Scorer:
        return self.scorer or self.kind


def class_name(label: str) -> str:
    """How a label is said in text: `dog_bark` -> `dog bark`, `'Train horn'` -> `Train horn`."""
    return " ".join(label.strip().strip("'\"").replace("_", " ").split())


# ---- CSV readers of the first benchmarks ---------------------------------------------------


def _classes(label_column: tuple[str, ...]) -> Callable[[Rows], list[Example]]:
    def parse(rows: Rows) -> list[Example]:
        column = next((c for c in label_column if c in rows[0]), None)
        if column is None:
            raise BenchmarkError(f"no label column (one of {', '.join(label_column)})")
        file_column = next(c for c in ("filename", "slice_file_name") if c in rows[0])
        return [Example(row[file_column], (class_name(row[column]),)) for row in rows]

    return parse


def _captions(rows: Rows) -> list[Example]:
    if "caption_1" in rows[0]:  # Clotho: one row per clip, caption_1..caption_5
        columns = sorted(c for c in rows[0] if c.startswith("caption_"))
        return [Example(row["file_name"], tuple(row[c] for c in columns if row[c])) for row in rows]
    by_clip: dict[str, list[str]] = collections.defaultdict(list)  # AudioCaps: one row per caption
    for row in rows:
        by_clip[row["youtube_id"]].append(row["caption"])
    return [Example(clip, tuple(captions)) for clip, captions in by_clip.items()]


def _questions(rows: Rows) -> list[Example]:
    """Clotho-AQA: one example per (clip, question), with every annotator's answer."""
    answers: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for row in rows:
        answers[(row["file_name"], row["QuestionText"])].append(row["answer"])
    return [Example(clip, tuple(a), question) for (clip, question), a in answers.items()]


def _youtube_names(youtube_id: str) -> tuple[str, ...]:
    """Clips of YouTube sets are saved as `ID` or `YID` (AudioSet style), with or without times
    appended."""
    return youtube_id, f"Y{youtube_id}"


# ---- the other benchmarks' official layouts ------------------------------------------------


def _fsd50k(rows: Rows) -> list[Example]:
    """FSD50K `FSD50K.ground_truth/eval.csv`: `fname,labels,mids`, labels comma-separated."""
    return [
        Example(row["fname"], tuple(class_name(x) for x in row["labels"].split(",")))
        for row in rows
    ]


def _dcase17(rows: Rows) -> list[Example]:
    """DCASE 2017 task 4 `groundtruth_weak_label_evaluation_set.csv`: tab-separated, no header,
    one row per (clip, event): `-5QrBL6MzLg_60.000_70.000.wav  60.000  70.000  Train horn`."""
    labels: dict[str, list[str]] = collections.defaultdict(list)
    for row in rows:
        label = class_name(row["label"])
        if label not in labels[row["filename"]]:
            labels[row["filename"]].append(label)
    return [Example(clip, tuple(events)) for clip, events in labels.items()]


def _dcase17_names(filename: str) -> tuple[str, ...]:
    return filename, f"Y{filename}"


def _tut(rows: Rows) -> list[Example]:
    """TUT Acoustic Scenes 2017 `meta.txt`: tab-separated, no header, `audio/1.wav  beach  [id]`."""
    return [Example(row["filename"], (class_name(row["scene"]),)) for row in rows]


def _vggsound(rows: Rows) -> list[Example]:
    """VGGSound `vggsound.csv`: no header, `YouTube ID,start seconds,label,train/test split`; the
    test split's rows."""
    test = [row for row in rows if (row["split"] or "").strip() == "test"]
    if not test:
        raise BenchmarkError("no rows of the test split")
    return [
        Example(f"{row['youtube_id']}_{int(row['start']):06d}", (class_name(row["label"]),))
        for row in test
    ]


def _vggsound_names(clip: str) -> tuple[str, ...]:
    """`ID_000030` as the release names its clips, or `ID_30`, or the bare `ID`."""
    youtube_id, start = clip.rsplit("_", 1)
    return clip, f"{youtube_id}_{int(start)}", youtube_id


def _folder_classes(names: Mapping[str, str] | None = None) -> Callable[[Rows], list[Example]]:
    """Folder-per-class layouts (GTZAN `genres/blues/blues.00000.wav`): the class is the folder
    a clip is in, said as `names` says when it knows the folder."""
    names = {k.lower(): v for k, v in (names or {}).items()}

    def parse(rows: Rows) -> list[Example]:
        examples = []
        for row in rows:
            path = PurePosixPath(row["path"])
            if len(path.parts) < 2:
                raise BenchmarkError(f"{path}: not in a folder named after its class")
            folder = path.parent.name
            examples.append(Example(row["path"], (names.get(folder.lower(), class_name(folder)),)))
        return examples

    return parse


def _file_classes(label_of: Callable[[str], str | None]) -> Callable[[Rows], list[Example]]:
    """Layouts whose file names say the class (RAVDESS, CREMA-D, SESA, VocalSound): files whose
    name does not follow the convention are left out."""

    def parse(rows: Rows) -> list[Example]:
        examples = []
        for row in rows:
            label = label_of(PurePosixPath(row.get("path") or row["wav"]).stem)
            if label is not None:
                examples.append(Example(row.get("path") or row["wav"], (label,)))
        if not examples:
            raise BenchmarkError("no file named as the dataset names its clips")
        return examples

    return parse


RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}


def _ravdess_label(stem: str) -> str | None:
    """`03-01-06-01-02-01-12`: modality (03 = audio only), channel, EMOTION, intensity,
    statement, repetition, actor."""
    fields = stem.split("-")
    if len(fields) != 7 or fields[0] != "03":
        return None
    return RAVDESS_EMOTIONS.get(fields[2])


CREMA_D_EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


def _crema_d_label(stem: str) -> str | None:
    """`1001_DFA_ANG_XX`: actor, sentence, EMOTION, level."""
    fields = stem.split("_")
    return CREMA_D_EMOTIONS.get(fields[2]) if len(fields) == 4 else None


SESA_CLASSES = {
    "casual": "casual",
    "gunshot": "gunshot",
    "explosion": "explosion",
    "siren": "siren",
}


def _sesa_label(stem: str) -> str | None:
    """`gunshot_012`: the class, then the clip's number."""
    return SESA_CLASSES.get(re.sub(r"[_\-\s]*\d+$", "", stem).lower())


VOCALSOUND_CLASSES = {
    "laughter": "laughter",
    "sigh": "sigh",
    "cough": "cough",
    "throatclearing": "throat clearing",
    "sneeze": "sneeze",
    "sniff": "sniff",
}


def _vocalsound_label(stem: str) -> str | None:
    """`f0003_0_cough`: speaker, take, SOUND."""
    return VOCALSOUND_CLASSES.get(stem.rsplit("_", 1)[-1].lower())


# Beijing Opera Percussion: folders named after the instruments, as LTU's class list says them.
BJO_CLASSES = {
    "bangu": "clapper drum",
    "naobo": "cymbals",
    "daluo": "large gong",
    "xiaoluo": "small gong",
}


def _musiccaps(rows: Rows) -> list[Example]:
    """MusicCaps `musiccaps-public.csv`: the AudioSet-eval split (`is_audioset_eval`), one
    caption per clip."""
    test = [row for row in rows if row["is_audioset_eval"].strip().lower() == "true"]
    if not test:
        raise BenchmarkError("no rows with is_audioset_eval True")
    return [Example(row["ytid"], (row["caption"],)) for row in test]


def mmau_prompt(question: str, choices: Iterable[str]) -> str:
    """The question with its choices spelled out. MATS's own MMAU annotation file was never
    released, so this wording is ours."""
    return f"{question} Choose one of: {'; '.join(choices)}."


def _mmau(rows: Rows) -> list[Example]:
    """MMAU `mmau-test-mini.json` / `mmau-test.json`: `id, audio_id, question, choices, answer
    (absent in test), task, category, sub-category, difficulty`."""
    return [
        Example(
            row["audio_id"],
            (row["answer"],) if row.get("answer") else (),
            mmau_prompt(row["question"], row["choices"]),
            tuple(row["choices"]),
            row,
        )
        for row in rows
    ]


# The AIR-Bench Chat subsets the original evaluated (`datasets/clap_dataset.py`): sound and music.
AIRBENCH_TASKS = ("sound_QA", "sound_generation_QA", "music_QA", "music_generation_analysis_QA")


def _airbench_chat(rows: Rows) -> list[Example]:
    """AIR-Bench `Chat/Chat_meta.json`: `path, task_name, dataset_name, question, answer_gt,
    meta_info, uniq_id`; audio at `Chat/{task_name}_{dataset_name}/{path}`."""
    return [
        Example(
            f"{row['task_name']}_{row['dataset_name']}/{row['path']}",
            (row["answer_gt"],),
            row["question"],
            source=row,
        )
        for row in rows
        if row["task_name"] in AIRBENCH_TASKS
    ]


def _exact_path(clip: str) -> tuple[str, ...]:
    return (clip,)  # AIR-Bench reuses file names across its folders


def _original_annotations(benchmark: Benchmark, rows: Rows) -> list[Example]:
    """The original code's annotation JSON: `audio_id` (relative to its data root), `output`
    (the class, comma-separated classes, the caption or the answer), `instruction` (QA)."""
    examples = []
    for row in rows:
        output = str(row["output"])
        if benchmark.scoring == "multilabel":
            references = tuple(class_name(x) for x in re.split(r"[,;]", output) if x.strip())
        elif benchmark.scoring == "classification":
            references = (class_name(output),)
        else:
            references = (output,)
        question = row.get("instruction") if benchmark.kind == "qa" else None
        examples.append(Example(row["audio_id"], references, question))
    return examples


def _single_label(
    name: str, tag: str, files: tuple[str, ...], parse: Callable[[Rows], list[Example]], **kw: Any
) -> Benchmark:
    return Benchmark(name, "classification", "cla_label", tag, files, parse, **kw)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        _single_label(
            "esc50",
            SINGLE_EVENT,
            ("labels.csv", "meta/esc50.csv", "esc50.csv"),
            _classes(("label", "category")),
        ),
        _single_label(
            "us8k",
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
        Benchmark(
            "fsd50k",
            "classification",
            "cla_label",
            MULTI_EVENTS,
            ("FSD50K.ground_truth/eval.csv", "eval.csv"),
            _fsd50k,
            scorer="multilabel",
        ),
        Benchmark(
            "dcase17",
            "classification",
            "cla_label",
            SINGLE_EVENT,  # the original config's tag, although clips may hold several events
            ("groundtruth_weak_label_evaluation_set.csv",),
            _dcase17,
            _dcase17_names,
            scorer="multilabel",
            columns=("filename", "onset", "offset", "label"),
            delimiter="\t",
        ),
        _single_label(
            "tut17",
            "[scene event]",
            ("meta.txt",),
            _tut,
            columns=("filename", "scene", "location"),
            delimiter="\t",
        ),
        _single_label(
            "vggsound",
            SINGLE_EVENT,
            ("vggsound.csv",),
            _vggsound,
            clip_names=_vggsound_names,
            columns=("youtube_id", "start", "label", "split"),
        ),
        _single_label("gtzan", "[music genres]", (), _folder_classes(), listing=True),
        _single_label("bjo", "[instruction event]", (), _folder_classes(BJO_CLASSES), listing=True),
        _single_label(
            "vocalsound",
            "[vocal event]",
            ("datafiles/te.json", "te.json"),
            _file_classes(_vocalsound_label),
            listing=True,
        ),
        _single_label(
            "ravdess", "[emotion event]", (), _file_classes(_ravdess_label), listing=True
        ),
        # CREMA-D has no eval config in the original; it is asked as RAVDESS is.
        _single_label(
            "crema_d", "[emotion event]", (), _file_classes(_crema_d_label), listing=True
        ),
        _single_label("sesa", "[surveillance event]", (), _file_classes(_sesa_label), listing=True),
        Benchmark(
            "musiccaps",
            "captioning",
            "music_caption",
            MUSIC_CAPTION,
            ("musiccaps-public.csv",),
            _musiccaps,
            _youtube_names,
        ),
        Benchmark(
            "mmau",
            "qa",
            "QA",
            OPEN_ENDED,
            ("mmau-test-mini.json", "mmau-test.json"),
            _mmau,
            scorer="choice",
        ),
        Benchmark(
            "airbench_chat",
            "qa",
            "QA",
            OPEN_ENDED,
            ("Chat_meta.json", "Chat/Chat_meta.json"),
            _airbench_chat,
            _exact_path,
            scorer="chat",
        ),
    )
}


def metadata_file(benchmark: Benchmark, data: Path) -> Path:
    """`data` itself if it is a file, else the first of the benchmark's metadata files under it
    (or, for a dataset whose metadata is its folders, the folder itself)."""
    if data.is_file():
        return data
    if not data.is_dir():
        raise BenchmarkError(f"{data}: no such file or folder")
    for name in benchmark.metadata_files:
        if (data / name).is_file():
            return data / name
    if benchmark.listing:
        return data
    raise BenchmarkError(
        f"{data}: none of {', '.join(benchmark.metadata_files)} "
        f"(the {benchmark.name} metadata) is there"
    )


def audio_files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file()
    ]


def _rows(benchmark: Benchmark, metadata: Path) -> Rows:
    if metadata.is_dir():
        return [{"path": p.relative_to(metadata).as_posix()} for p in audio_files(metadata)]
    if metadata.suffix.lower() == ".json":
        try:
            rows = json.loads(metadata.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{metadata}: not JSON ({e})") from None
        rows = rows.get("data", rows) if isinstance(rows, dict) else rows  # VocalSound: {"data"}
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BenchmarkError(f"{metadata}: not a JSON list of objects")
        return rows
    with metadata.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(
            (line for line in f if line.strip()),
            fieldnames=benchmark.columns or None,
            delimiter=benchmark.delimiter,
        )
        return list(reader)


def read_examples(benchmark: Benchmark, metadata: Path) -> list[Example]:
    rows = _rows(benchmark, metadata)
    if not rows:
        raise BenchmarkError(f"{metadata}: no rows" + (" (no audio files)" * metadata.is_dir()))
    try:
        if {"audio_id", "output"} <= set(rows[0]):
            examples = _original_annotations(benchmark, rows)
        else:
            examples = benchmark.parse(rows)
    except (KeyError, StopIteration, ValueError, AttributeError, TypeError, BenchmarkError) as e:
        raise BenchmarkError(
            f"{metadata}: not {benchmark.name} metadata ({type(e).__name__}: {e}; "
            f"columns {', '.join(map(str, rows[0]))})"
        ) from None
    if not examples:
        raise BenchmarkError(f"{metadata}: no {benchmark.name} examples in it")
    return examples


def read_vocabulary(path: Path) -> list[str]:
    """A class list: a `class_labels_indices` CSV (`index,mid,display_name`, LTU's and AudioSet's)
    or FSD50K's header-less `vocabulary.csv` (`index,label,mid`), said as text."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such class list")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise BenchmarkError(f"{path}: empty class list")
    if "display_name" in rows[0]:
        column = rows[0].index("display_name")
        names = [row[column] for row in rows[1:]]
    elif all(len(row) >= 2 for row in rows):
        names = [row[1] for row in rows]
    else:
        raise BenchmarkError(f"{path}: neither a display_name column nor `index,label,mid` rows")
    return list(dict.fromkeys(class_name(n) for n in names))


_TIMES = re.compile(
    r"(_\d+(\.\d+)?)+$"
)  # `_30`, `_30.000_40.000`: start (and end) appended to a clip id


def audio_index(folder: Path) -> dict[str, Path]:
    """Every audio file under `folder` (official layouts nest folds), by path relative to it, by
    file name, by stem, and by stem without appended start/end times."""
    index: dict[str, Path] = {}
    for path in audio_files(folder):
        keys = (
            path.relative_to(folder).as_posix(),
            path.name,
            path.stem,
            _TIMES.sub("", path.stem),
        )
        for key in keys:
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
