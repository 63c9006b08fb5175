"""Builders on the real files of ../shared/data: counts, record shapes, evaluation clips kept
out."""

import csv
import shutil

import pytest

from mats_jax.data import records as R
from mats_jax.data.sources import SOURCES, build
from tests.support.paths import DATA_ROOT, shared


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str], list[R.Record]]:
    """Every split of every source, built once (about 4 s)."""
    out = {}
    for name, source in SOURCES.items():
        for split in source.splits:
            rows = build(name, shared(DATA_ROOT), split)
            out[name, split] = list(rows)
            assert rows.tally.malformed == 0, (name, split)
    return out


# Row counts of the data README (AudioCaps and Clotho captions; AudioSet segments; label lists).
README_COUNTS = {
    ("audiocaps", "train"): 49_838,
    ("audiocaps", "val"): 2_475,
    ("audiocaps", "test"): 4_875,
    ("clotho", "val"): 5_225,
    ("clotho", "test"): 5_225,
    ("audioset", "train"): 22_160,
    ("audioset", "test"): 20_371,
    ("wavcaps_soundbible", "train"): 1_232,
    ("vggsound", "train"): 309,
    ("fsd50k", "train"): 200,
    ("dcase", "train"): 17,
    ("tut", "train"): 15,
    ("esc50", "test"): 400,  # fold 4 of 5 x 400
    ("esc50", "train"): 1_600,
    ("urbansound8k", "train"): 8_732 - 837,  # fold 10 has 837 clips
    ("urbansound8k", "test"): 837,
}


def test_counts_match_the_readme(built):
    for key, count in README_COUNTS.items():
        assert len(built[key]) == count, key


def test_clotho_train_is_the_development_split_less_evaluation_clips():
    rows = build("clotho", shared(DATA_ROOT), "train")
    records = list(rows)
    # 3,839 development clips x 5 captions; 426 clips are also in an evaluation split (2 by name
    # in Clotho val/test, 424 in Clotho-AQA val/test).
    assert len(records) + rows.tally.dropped["the clip is in an evaluation split"] == 19_195
    assert len(records) == 5 * (3_839 - 426)


def test_clotho_aqa_has_one_record_per_question_with_a_majority_answer():
    for split, questions in (("train", 4_695 + 2_348), ("val", 1_376 + 688), ("test", 1_892 + 946)):
        rows = build("clotho_aqa", shared(DATA_ROOT), split)
        records = list(rows)
        assert len(records) + sum(rows.tally.dropped.values()) == questions
    record = next(r for r in records if r.instruction == "How many times does the water splash?")
    assert record.answer == "Eleven"  # answers ELEVEN, NINE, ELEVEN
    assert (record.task, record.tag, record.clip) == ("qa", "[audio qa]", "clotho:river_mouth3.wav")
    captions = set()
    for clotho_split in ("train", "val", "test"):
        with open(shared(DATA_ROOT / f"captions/clotho/{clotho_split}.csv"), newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["file_name"] == "river_mouth3.wav"]
            captions.update(c for row in rows for c in row.values())
    assert record.text in captions


def test_no_evaluation_clip_reaches_a_training_split(built):
    for namespace in ("youtube", "clotho", "esc50", "urbansound8k"):
        eval_clips, train_clips = set(), set()
        for (name, split), records in built.items():
            clips = {r.clip for r in records if r.clip.startswith(namespace + ":")}
            (eval_clips if split in SOURCES[name].eval_splits else train_clips).update(clips)
        assert eval_clips, namespace
        assert not eval_clips & train_clips, namespace


def test_records_are_well_formed_and_tagged(built):
    for (name, split), records in built.items():
        assert records, (name, split)
        assert {r.source for r in records} == {name}
        tags = {r.tag for r in records}
        tasks = {r.task for r in records}
        if name in ("audiocaps", "clotho"):
            assert tags == {f"[audio caption {name}]"} and tasks == {"caption"}
            assert all(r.text == r.answer for r in records)
        elif name == "clotho_aqa":
            assert tags == {"[audio qa]"} and tasks == {"qa"}
        elif name == "wavcaps_soundbible":
            assert tags == {"[audio caption wavcaps]"}
        else:
            assert tasks == {"cla_label"}
            assert tags == (
                {"[multi events]"}
                if name in ("audioset", "fsd50k", "dcase")
                else {"[single event]"}
            )


def test_label_names_are_cleaned(built):
    names = ("esc50", "urbansound8k", "vggsound", "fsd50k", "dcase")
    answers = {name: {r.answer for r in built[name, "train"]} for name in names}
    assert "chirping birds" in answers["esc50"] and "dog bark" in answers["urbansound8k"]
    assert "bird chirping, tweeting" in answers["vggsound"]
    assert (
        "Male speech, man speaking" in answers["fsd50k"]
    )  # FSD50K's "Male_speech_and_man_speaking"
    assert "Train horn" in answers["dcase"]  # quotes stripped
    audioset = built["audioset", "train"][0]
    assert (audioset.text, audioset.answer) == ("Sounds of speech and gush.", "Speech, Gush")
    assert audioset.clip == "youtube:--PJHxphWEs"


def test_missing_file_is_an_error(tmp_path):
    shutil.copytree(shared(DATA_ROOT / "captions/audiocaps"), tmp_path / "captions/audiocaps")
    assert len(list(build("audiocaps", tmp_path, "val"))) == 2_475
    # A training split also needs the files that list the evaluation clips to keep out.
    with pytest.raises(FileNotFoundError, match="eval_segments.csv"):
        build("audiocaps", tmp_path, "train")


def test_unknown_source_or_split():
    with pytest.raises(KeyError, match="unknown source"):
        build("macs", DATA_ROOT, "train")
    with pytest.raises(ValueError, match="no split 'val'"):
        build("esc50", DATA_ROOT, "val")


def test_malformed_real_format_rows_are_skipped(tmp_path, caplog):
    """The AudioSet segment format (comment header, quoted label lists) reports bad rows by line."""
    src = shared(DATA_ROOT / "captions/audioset")
    (tmp_path / "captions/audioset").mkdir(parents=True)
    shutil.copy(src / "class_labels_indices.csv", tmp_path / "captions/audioset")
    lines = (src / "eval_segments.csv").read_text().splitlines(keepends=True)
    lines[4] = '--BfvyPmVMo, 20.000, 30.000, "/m/nope"\n'  # line 5
    lines[5] = "--too-few, 1.0\n"  # line 6
    (tmp_path / "captions/audioset/eval_segments.csv").write_text("".join(lines))
    rows = build("audioset", tmp_path, "test")
    assert len(list(rows)) == 20_371 - 2
    assert rows.tally.malformed == 2
    messages = [r.getMessage() for r in caplog.records]
    path = tmp_path / "captions/audioset/eval_segments.csv"
    assert any(m.startswith(f"{path}:5: unknown label id") for m in messages)
    assert any(m.startswith(f"{path}:6: 2 fields") for m in messages)
