"""Benchmark metadata read from the real files in ../shared/data: clip counts, classes, references,
and audio found under the layouts people keep it in."""

from pathlib import Path

import pytest

from mats_jax.evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    find_audio,
    metadata_file,
    read_examples,
)
from tests.support.paths import DATA_ROOT, shared


def read(name: str, path: Path):
    benchmark = BENCHMARKS[name]
    return read_examples(benchmark, metadata_file(benchmark, shared(path)))


def test_esc50_subset_and_official_metadata():
    subset = read("esc50", DATA_ROOT / "audio" / "esc50")
    assert len(subset) == 100 and len({e.references[0] for e in subset}) == 50
    assert subset[0].clip == "4-161099-A-47.wav" and subset[0].references == ("airplane",)
    official = read("esc50", DATA_ROOT / "captions" / "esc50" / "esc50.csv")
    assert len(official) == 2000 and len({e.references for e in official}) == 50
    assert {e.references[0] for e in subset} == {e.references[0] for e in official}
    assert "crying baby" in {e.references[0] for e in official}  # `crying_baby` said as text


def test_urbansound8k_classes():
    examples = read("us8k", DATA_ROOT / "captions" / "urbansound8k")
    assert len(examples) == 8732
    assert {e.references[0] for e in examples} == {
        "air conditioner",
        "car horn",
        "children playing",
        "dog bark",
        "drilling",
        "engine idling",
        "gun shot",
        "jackhammer",
        "siren",
        "street music",
    }


def test_caption_benchmarks_group_five_references_per_clip():
    clotho = read("clotho", DATA_ROOT / "captions" / "clotho")
    assert len(clotho) == 1045 and all(len(e.references) == 5 for e in clotho)
    assert clotho[0].clip == "Santa Motor.wav"
    audiocaps = read("audiocaps", DATA_ROOT / "captions" / "audiocaps" / "v2")
    assert len(audiocaps) == 975 and all(len(e.references) == 5 for e in audiocaps)


def test_clotho_aqa_keeps_every_annotators_answer():
    examples = read("clotho_aqa", DATA_ROOT / "captions" / "clotho_aqa")  # binary_test_eng.csv
    assert len(examples) == 5676 // 3 and all(len(e.references) == 3 for e in examples)
    assert all(e.question.endswith("?") for e in examples[:20])


def test_audio_is_found_in_nested_and_youtube_layouts(tmp_path):
    (tmp_path / "fold4").mkdir()
    (tmp_path / "fold4" / "4-161099-A-47.wav").write_bytes(b"")
    esc50 = read("esc50", DATA_ROOT / "audio" / "esc50")
    found, missing = find_audio(BENCHMARKS["esc50"], esc50, tmp_path)
    assert list(found) == ["4-161099-A-47.wav"] and len(missing) == 99

    audiocaps = read("audiocaps", DATA_ROOT / "captions" / "audiocaps" / "v2")
    first, second = audiocaps[0].clip, audiocaps[1].clip
    (tmp_path / f"Y{first}_20.000_30.000.flac").write_bytes(b"")
    (tmp_path / f"{second}.wav").write_bytes(b"")
    found, missing = find_audio(BENCHMARKS["audiocaps"], audiocaps[:3], tmp_path)
    assert set(found) == {first, second} and missing == [audiocaps[2].clip]


def test_missing_or_foreign_metadata_is_named(tmp_path):
    with pytest.raises(BenchmarkError, match="UrbanSound8K.csv"):
        metadata_file(BENCHMARKS["us8k"], tmp_path)
    with pytest.raises(BenchmarkError, match="not clotho_aqa metadata"):
        read("clotho_aqa", DATA_ROOT / "captions" / "clotho" / "test.csv")
