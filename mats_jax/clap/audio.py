"""Audio files -> fixed-length float32 waveforms, the way msclap's CLAPWrapper prepares them.

msclap (`read_audio` + `load_audio_into_tensor`) decodes to [C, T] float32, resamples to the
model rate, then **flattens channel after channel** (stereo is concatenated, not averaged),
tiles clips that are too short (repeat ceil(target/len) times, then cut) and takes a random
window from clips that are too long (`random.randrange(len - target)`). We keep all of that,
make the crop seedable, and add a centre crop for deterministic evaluation.

Differences from msclap, on purpose:
- Decoding uses soundfile (libsndfile >= 1.1 reads wav/flac/ogg/mp3; the soundfile wheels ship
  one). torchaudio >= 2.9 decodes through FFmpeg; MP3 decoders may disagree on encoder delay
  and padding by a few hundred samples. PCM wav/flac decode to identical floats.
- Resampling uses soxr ("soxr_hq", librosa's default), not torchaudio's windowed-sinc `Resample`
  (Hann, 6 zero crossings, rolloff 0.99), which cannot run here. Both are band-limited
  resamplers with the same output length, ceil(len * new / old); their filters differ near
  Nyquist. Against a replica of torchaudio's kernel on the shipped clips: 48 -> 44.1 kHz mp3s
  differ by SNR 66-72 dB (max |diff| < 1e-3); band-limited 16/22.05/32 kHz sources upsampled
  to 44.1 kHz differ by 22-64 dB, the error sitting near the source's Nyquist. Clips already at
  the model rate (ESC-50, Clotho: 44.1 kHz) are not resampled, so they match exactly.
- Undecodable, empty, non-finite or all-zero audio raises `AudioError` instead of feeding NaN
  or a decoding failure's silence to the model.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from mats_jax.runtime.errors import InputError

# What `read_audio` decodes (libsndfile >= 1.1: PCM containers, FLAC, Ogg Vorbis/Opus, MP3), in
# lower case; `audio_files` takes these suffixes in any case, from a folder or named directly.
# No AAC/ALAC decoder is linked, so .m4a/.mp4/.aac are not among them.
SUPPORTED_SUFFIXES = (
    ".aif",
    ".aifc",
    ".aiff",
    ".au",
    ".caf",
    ".flac",
    ".mp3",
    ".oga",
    ".ogg",
    ".opus",
    ".rf64",
    ".w64",
    ".wav",
)

Crop = Literal["random", "center"]
Rng = np.random.Generator | random.Random | int | None


class AudioError(InputError):
    """A file that cannot be turned into a clip: missing, not audio, empty or undecodable."""


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode `path` to float32 [channels, samples] (PCM scaled to [-1, 1) like torchaudio).

    sample_rate: resample every channel to this rate (soxr_hq); None keeps the file's rate.
    Returns (audio, rate). Raises AudioError for missing, undecodable, empty, non-finite or
    all-zero audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.SoundFileError as e:
        raise AudioError(f"{path}: not a readable audio file ({str(e).splitlines()[0]})") from None
    if data.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: decodes to NaN or infinite samples")
    if not data.any():
        raise AudioError(f"{path}: decodes to all-zero samples (silent or a decoding failure)")
    audio = np.ascontiguousarray(data.T)
    if sample_rate is not None and sample_rate != rate:
        return _resample(audio, rate, sample_rate), sample_rate
    return audio, rate


def fit_length(
    samples: np.ndarray, target: int, *, crop: Crop = "random", rng: Rng = None
) -> np.ndarray:
    """msclap's length rule on a 1-D array: tile-and-cut when len <= target, else crop.

    crop="random": start uniform in [0, len - target), exactly msclap's range (its last valid
    start, len - target, is never drawn). A `random.Random` gives the same start as msclap's
    `random.randrange` after `random.seed` with the same seed; a numpy Generator or int seed
    gives the same distribution. crop="center": start (len - target) // 2.
    """
    if crop not in ("random", "center"):
        raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
    n = samples.shape[0]
    if n == 0:
        raise ValueError("cannot fit an empty clip to a length")
    if n <= target:
        return np.tile(samples, math.ceil(target / n))[:target]
    start = (n - target) // 2 if crop == "center" else _randrange(_as_rng(rng), n - target)
    return samples[start : start + target]


def load_clip(
    path: str | os.PathLike,
    *,
    sample_rate: int = 44100,
    duration: float = 7.0,
    crop: Crop = "random",
    rng: Rng = None,
) -> np.ndarray:
    """One file -> float32 [round(duration * sample_rate)], as msclap feeds its audio encoder.

    Defaults are msclap-2023 (44.1 kHz, 7 s = 308,700 samples); LAION-CLAP uses 48 kHz, 10 s.
    rng: see `fit_length`; None draws from fresh OS entropy (msclap's behaviour).
    """
    audio, _ = read_audio(path, sample_rate)
    return fit_length(audio.reshape(-1), _target(sample_rate, duration), crop=crop, rng=rng)


def load_batch(
    paths: Sequence[str | os.PathLike],
    *,
    sample_rate: int = 44100,
    duration: float = 7.0,
    crop: Crop = "random",
    rng: Rng = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Load many files, skipping bad ones so one corrupt file does not stop a dataset pass.

    Returns (clips [N_ok, samples] float32 in input order, {str(path): error message} for the
    files that failed). One rng is shared across the batch, so a seed fixes every crop.
    """
    generator, target = _as_rng(rng), _target(sample_rate, duration)
    clips, errors = [], {}
    for path in paths:
        try:
            clips.append(
                load_clip(
                    path, sample_rate=sample_rate, duration=duration, crop=crop, rng=generator
                )
            )
        except AudioError as e:
            errors[str(path)] = str(e)
    return np.stack(clips) if clips else np.zeros((0, target), np.float32), errors


def audio_files(path: str | os.PathLike) -> list[Path]:
    """A file -> [file]; a folder -> its audio files (recursive), sorted by path.

    Both accept exactly the SUPPORTED_SUFFIXES, in any case: a named file with another suffix is
    an AudioError (it could not be decoded), and a folder's other files are left out.
    """
    path = Path(path)
    if path.is_file():
        if not is_audio_file(path):
            raise AudioError(
                f"{path}: not an audio file that can be read "
                f"(suffixes read: {', '.join(SUPPORTED_SUFFIXES)})"
            )
        return [path]
    if not path.is_dir():
        raise AudioError(f"{path}: no such file or folder")
    return sorted(p for p in path.rglob("*") if p.is_file() and is_audio_file(p))


def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether `path`'s suffix is one `read_audio` decodes (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def _resample(audio: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """soxr "HQ" per channel (what librosa.resample(res_type="soxr_hq") runs, without librosa's
    multi-second first-call cost), cut or zero-padded to torchaudio's length ceil(len * new /
    old) in exact integers: librosa's float ratio can give one sample more, shifting the tiling.
    """
    n_out = -(-audio.shape[-1] * new_rate // rate)
    out = np.zeros((audio.shape[0], n_out), np.float32)
    for row, channel in zip(out, audio):
        resampled = soxr.resample(channel, rate, new_rate, quality="soxr_hq")[:n_out]
        row[: resampled.size] = resampled
    return out


def _target(sample_rate: int, duration: float) -> int:
    target = round(duration * sample_rate)
    if target <= 0:
        raise ValueError(f"duration * sample_rate must be positive, got {duration} * {sample_rate}")
    return target


def _as_rng(rng: Rng) -> np.random.Generator | random.Random:
    if isinstance(rng, (np.random.Generator, random.Random)):
        return rng
    return np.random.default_rng(rng)


def _randrange(rng: np.random.Generator | random.Random, stop: int) -> int:
    if isinstance(rng, random.Random):
        return rng.randrange(stop)
    return int(rng.integers(stop))
