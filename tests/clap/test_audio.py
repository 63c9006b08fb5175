"""mats_jax.clap.audio on real clips, checked against msclap's own loader code where it can run.

msclap's CLAPWrapper cannot be imported as is (torchaudio does not load here), so the fixture
puts a stub torchaudio in sys.modules whose `load` decodes with soundfile (what torchaudio
returns for PCM: float32 [C, T] scaled by 1/32768). msclap's `load_audio_into_tensor` then runs
unchanged: its flattening, tiling and `random.randrange` cropping are what we compare against.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import random
import sys
import types
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from mats_jax.clap.audio import (
    SUPPORTED_SUFFIXES,
    AudioError,
    audio_files,
    fit_length,
    load_batch,
    load_clip,
    read_audio,
)
from tests.support.paths import DATA_ROOT, shared

DATA = DATA_ROOT / "audio"
TARGET = 7 * 44100


@pytest.fixture(scope="module")
def esc() -> list[Path]:
    """The shared ESC-50 clips (5 s, 44.1 kHz mono), sorted by name."""
    return sorted(shared(DATA / "esc50").glob("*.wav"))


@pytest.fixture(scope="module")
def mp3() -> Path:
    """The shared folder of MP3 clips (BigSoundBank)."""
    return shared(DATA / "bigsoundbank_ovos")


@pytest.fixture
def msclap_load(monkeypatch):
    """msclap's load_audio_into_tensor(path, 7, resample=True) -> numpy, torchaudio stubbed."""

    def load(path):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)), rate

    def no_resample(*args, **kwargs):
        raise AssertionError("test clips must already be at 44.1 kHz")

    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)  # transformers probes it
    stub.load = load
    stub.transforms = types.ModuleType("torchaudio.transforms")
    stub.transforms.Resample = no_resample
    monkeypatch.setitem(sys.modules, "torchaudio", stub)
    monkeypatch.setitem(sys.modules, "torchaudio.transforms", stub.transforms)
    wrapper_module = importlib.import_module("msclap.CLAPWrapper")
    monkeypatch.setattr(wrapper_module, "torchaudio", stub)
    monkeypatch.setattr(wrapper_module, "T", stub.transforms)
    wrapper = wrapper_module.CLAPWrapper.__new__(wrapper_module.CLAPWrapper)
    wrapper.args = argparse.Namespace(sampling_rate=44100)
    return lambda path: wrapper.load_audio_into_tensor(str(path), 7, resample=True).numpy()


def _pcm(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def test_short_mono_clip_is_tiled_like_msclap(msclap_load, esc):
    clip = load_clip(esc[0])
    assert clip.dtype == np.float32 and clip.shape == (TARGET,)
    np.testing.assert_array_equal(clip, msclap_load(esc[0]))
    x = _pcm(esc[0])  # 5 s: x then its first 2 s
    np.testing.assert_array_equal(clip, np.concatenate([x, x[: TARGET - x.size]]))


def test_stereo_is_flattened_channel_after_channel(tmp_path, msclap_load, esc):
    left, right = _pcm(esc[1])[:88200], _pcm(esc[2])[:88200]  # 2 s each, 4 s flattened
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    clip = load_clip(path)
    np.testing.assert_array_equal(clip, np.tile(np.concatenate([left, right]), 2)[:TARGET])
    np.testing.assert_array_equal(clip, msclap_load(path))


def test_long_clip_random_crop_matches_msclap_and_is_seedable(tmp_path, msclap_load, esc):
    x = np.concatenate([_pcm(p) for p in esc[3:6]])  # 15 s
    path = tmp_path / "long.wav"
    sf.write(path, x, 44100, subtype="PCM_16")
    for seed in (0, 1, 12345):
        random.seed(seed)
        np.testing.assert_array_equal(load_clip(path, rng=random.Random(seed)), msclap_load(path))
    np.testing.assert_array_equal(load_clip(path, rng=7), load_clip(path, rng=7))
    assert not np.array_equal(load_clip(path, rng=7), load_clip(path, rng=8))
    start = (x.size - TARGET) // 2
    np.testing.assert_array_equal(load_clip(path, crop="center"), x[start : start + TARGET])


def test_stereo_mp3_crop_matches_msclap(msclap_load, mp3):
    path = mp3 / "duck.mp3"  # 44.1 kHz stereo, 6 s: 12 s once flattened, so cropped
    random.seed(3)
    np.testing.assert_array_equal(load_clip(path, rng=random.Random(3)), msclap_load(path))


@pytest.mark.parametrize("rng", [np.random.default_rng(0), random.Random(0)])
def test_crop_start_range_is_msclaps(rng):
    # random.randrange(len - target): starts 0 .. len - target - 1; the last valid one never.
    starts = {int(fit_length(np.arange(5), 3, rng=rng)[0]) for _ in range(200)}
    assert starts == {0, 1}


def test_resampled_file_matches_librosa(tmp_path, esc):
    x = librosa.resample(_pcm(esc[6]), orig_sr=44100, target_sr=22050, res_type="soxr_hq")
    path = tmp_path / "22k.wav"
    sf.write(path, x, 22050, subtype="FLOAT")
    up = librosa.resample(x, orig_sr=22050, target_sr=44100, res_type="soxr_hq")
    assert up.size == 220500
    np.testing.assert_array_equal(load_clip(path), np.tile(up, 2)[:TARGET])


def test_mp3_decodes_and_resamples_to_exact_length(mp3):
    path = mp3 / "owl.mp3"  # 48 kHz mono, 407,987 samples
    audio, rate = read_audio(path)
    assert rate == 48000 and audio.shape == (1, 407987)
    resampled, rate = read_audio(path, 44100)
    assert rate == 44100 and resampled.shape == (1, -(-407987 * 44100 // 48000))
    clip = load_clip(path, crop="center")
    start = (resampled.shape[1] - TARGET) // 2
    np.testing.assert_array_equal(clip, resampled[0, start : start + TARGET])
    assert np.isfinite(clip).all() and np.abs(clip).max() > 0.1


def test_laion_settings(esc):
    assert load_clip(esc[0], sample_rate=48000, duration=10.0).shape == (480000,)


def _bad_files(tmp_path: Path) -> list[tuple[Path, str]]:
    text = tmp_path / "text.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros((0, 1), np.float32), 44100, subtype="PCM_16")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1000, np.nan, np.float32), 44100, subtype="FLOAT")
    zeros = tmp_path / "zeros.wav"
    sf.write(zeros, np.zeros(1000, np.float32), 44100, subtype="PCM_16")
    return [
        (tmp_path / "missing.wav", "no such file"),
        (text, "not a readable audio file"),
        (empty, "not a readable audio file"),
        (header_only, "no audio samples"),
        (nan, "NaN"),
        (zeros, "all-zero"),
    ]


def test_bad_files_raise_one_line_audio_error_naming_the_file(tmp_path):
    for path, expected in _bad_files(tmp_path):
        with pytest.raises(AudioError) as info:
            load_clip(path)
        message = str(info.value)
        assert str(path) in message and expected in message and "\n" not in message


def test_load_batch_skips_bad_files(tmp_path, esc):
    bad = tmp_path / "text.wav"
    bad.write_text("not audio")
    clips, errors = load_batch([esc[0], bad, esc[1]], crop="center")
    assert clips.shape == (2, TARGET) and list(errors) == [str(bad)]
    np.testing.assert_array_equal(clips[1], load_clip(esc[1]))
    clips, errors = load_batch([bad])
    assert clips.shape == (0, TARGET) and len(errors) == 1


def test_load_batch_seed_fixes_every_crop(mp3):
    paths = [mp3 / "duck.mp3", mp3 / "owl.mp3"]
    np.testing.assert_array_equal(load_batch(paths, rng=5)[0], load_batch(paths, rng=5)[0])


def test_audio_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.wav", "a.MP3", "sub/c.flac", "notes.txt", "d.ogg"):
        (tmp_path / name).write_bytes(b"")
    expected = [tmp_path / name for name in ("a.MP3", "b.wav", "d.ogg", "sub/c.flac")]
    assert audio_files(tmp_path) == expected
    assert audio_files(tmp_path / "b.wav") == [tmp_path / "b.wav"]
    assert len(audio_files(shared(DATA / "esc50"))) == 100
    with pytest.raises(AudioError, match="missing"):
        audio_files(tmp_path / "missing")


def test_bad_arguments(esc):
    with pytest.raises(ValueError, match="crop must be"):
        load_clip(esc[0], crop="centre")
    with pytest.raises(ValueError, match="must be positive"):
        load_batch([esc[0]], duration=0)


def test_audio_files_takes_every_suffix_read_audio_reads_and_only_those(tmp_path):
    """A folder lists exactly the files that would be read if named, in any case; .m4a is not
    among them, since no AAC decoder is linked (read_audio cannot decode one)."""
    formats = {  # suffix -> soundfile (format, subtype)
        ".aif": ("AIFF", None),
        ".aifc": ("AIFF", None),
        ".aiff": ("AIFF", None),
        ".au": ("AU", None),
        ".caf": ("CAF", None),
        ".flac": ("FLAC", None),
        ".mp3": ("MP3", None),
        ".oga": ("OGG", "VORBIS"),
        ".ogg": ("OGG", "VORBIS"),
        ".opus": ("OGG", "OPUS"),
        ".rf64": ("RF64", None),
        ".w64": ("W64", None),
        ".wav": ("WAV", None),
    }
    assert set(formats) == set(SUPPORTED_SUFFIXES)
    assert ".m4a" not in SUPPORTED_SUFFIXES and "M4A" not in sf.available_formats()
    tone = 0.3 * np.sin(np.arange(4800) / 5).astype(np.float32)
    written = []
    for i, (suffix, (fmt, subtype)) in enumerate(sorted(formats.items())):
        name = f"{i:02d}{suffix.upper() if i % 2 else suffix}"  # either case
        sf.write(tmp_path / name, tone, 48000, format=fmt, subtype=subtype)
        written.append(tmp_path / name)
    (tmp_path / "clip.m4a").write_bytes((written[0]).read_bytes()[:64])
    (tmp_path / "notes.txt").write_text("not audio")
    assert audio_files(tmp_path) == written
    for path in written:
        assert audio_files(path) == [path]
        audio, rate = read_audio(path)
        assert rate == 48000 and audio.shape[0] == 1 and audio.shape[1] > 0
    for other in ("clip.m4a", "notes.txt"):
        with pytest.raises(AudioError, match="not an audio file that can be read"):
            audio_files(tmp_path / other)


def test_a_shared_clip_renamed_m4a_is_refused_named_and_left_out_of_a_folder(tmp_path):
    clip = sorted(shared(DATA / "esc50").glob("*.wav"))[0]
    (tmp_path / "clip.M4A").write_bytes(clip.read_bytes())
    (tmp_path / "clip.WAV").write_bytes(clip.read_bytes())
    assert audio_files(tmp_path) == [tmp_path / "clip.WAV"]
    with pytest.raises(AudioError, match=r"clip\.M4A: not an audio file .*\.wav\)"):
        audio_files(tmp_path / "clip.M4A")
