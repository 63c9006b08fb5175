"""Inputs the CLAP parity tests give the references and our CLAP: clips and caption ids."""

from __future__ import annotations

import functools

import numpy as np

from tests.support.paths import ESC50, shared

# msclap (2023): 7 s at 44.1 kHz
NUM_SAMPLES = 308_700
REAL_CLIPS = ("4-102844-A-49.wav", "4-102871-A-42.wav")


@functools.lru_cache(maxsize=1)
def waveforms() -> np.ndarray:
    """[4, 308700] float32: noise, a 440 Hz sine, two real ESC-50 clips (tiled like msclap)."""
    import librosa

    t = np.arange(NUM_SAMPLES) / 44100
    clips = [
        0.1 * np.random.default_rng(0).standard_normal(NUM_SAMPLES),
        0.5 * np.sin(2 * np.pi * 440 * t),
    ]
    for name in REAL_CLIPS:
        y, _ = librosa.load(shared(ESC50 / name), sr=44100, mono=True)
        clips.append(np.tile(y, -(-NUM_SAMPLES // len(y)))[:NUM_SAMPLES])
    return np.stack(clips).astype(np.float32)


# LAION: 48 kHz
SR = 48000


@functools.lru_cache(maxsize=1)
def clips() -> tuple[np.ndarray, ...]:
    """48 kHz mono clips: 14 s noise + tone (long: cropped / fused), a 4 s sine (short: repeatpad
    leaves 2 s of silence at the 1e-10 floor), a real ESC-50 clip (5 s)."""
    import librosa

    t = np.arange(14 * SR) / SR
    rng = np.random.default_rng(0)
    out = [
        0.1 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * 1000 * t),
        0.5 * np.sin(2 * np.pi * 440 * t[: 4 * SR]),
        librosa.load(shared(ESC50 / REAL_CLIPS[0]), sr=SR, mono=True)[0],
    ]
    return tuple(np.asarray(c, np.float32) for c in out)


def caption_ids() -> tuple[np.ndarray, np.ndarray]:
    """8 captions' RoBERTa ids (<s> words </s>, then <pad>) of lengths 3..77 and their mask."""
    rng = np.random.default_rng(7)
    ids = np.ones((8, 77), np.int64)
    mask = np.zeros((8, 77), np.int64)
    for i, length in enumerate([3, 9, 15, 22, 30, 41, 60, 77]):
        ids[i, :length] = np.concatenate([[0], rng.integers(3, 50265, length - 2), [2]])
        mask[i, :length] = 1
    return ids, mask
