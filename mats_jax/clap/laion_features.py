"""LAION-CLAP's audio features (transformers `ClapFeatureExtractor`), in numpy and JAX.

    waveform @ 48 kHz --pad/crop to 10 s--> log-mel [1001, 64] (dB)
        truncation "rand_trunc": Slaney mel bank, one channel, random 10 s crop of longer clips
        truncation "fusion":     HTK mel bank (no norm), four channels: for clips over 10 s the
                                 whole clip's mel shrunk to 1001 frames (bilinear) + 3 random
                                 1001-frame crops (front, middle, back thirds); shorter clips
                                 give four copies. `is_longer` marks the clips that got crops.
    padding of shorter clips: "repeatpad" tiles floor(10 s / len) times then zero-pads,
    "repeat" tiles and cuts, anything else zero-pads.

The log-mel is the extractor's: periodic Hann 1024, n_fft 1024, hop 480, centred with reflect
padding, power spectrum, mel bank (fmin/fmax from the extractor config: transformers' defaults
are 0 and 14000 Hz), max(·, 1e-10), 10·log10. The numpy path (`FeatureExtractor`,
`log_mel_spectrogram`) follows transformers step by step in float64 (including its complex64
spectrum) and agrees with it to float32 rounding. `log_mel_jax` is the same computation in
float32 JAX for fixed-length batches (no random crops), used by `CLAP.embed_audio` of the LAION
family.

Randomness (crop positions, and transformers' quirk of flagging one random clip of a batch as
`is_longer` when no clip is longer than 10 s in fusion mode) comes from the `rng` argument, so a
seeded `np.random.Generator` makes the features deterministic. The draws happen in the order
and ranges transformers uses with `np.random`, so a generator substituted for `np.random`
reproduces its choices (see tests/models/test_clap_laion.py).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

TRUNCATIONS = ("rand_trunc", "fusion")


# ---------------------------------------------------------------------------------------------
# Mel filter banks (transformers.audio_utils.mel_filter_bank, float64).


def hertz_to_mel(freq: np.ndarray | float, mel_scale: str = "htk") -> np.ndarray:
    freq = np.asarray(freq, np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    min_log_hertz, min_log_mel, logstep = 1000.0, 15.0, 27.0 / np.log(6.4)
    mels = 3.0 * freq / 200.0
    log_region = freq >= min_log_hertz
    return np.where(
        log_region,
        min_log_mel + np.log(np.maximum(freq, min_log_hertz) / min_log_hertz) * logstep,
        mels,
    )


def mel_to_hertz(mels: np.ndarray | float, mel_scale: str = "htk") -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    if mel_scale == "htk":
        return 700.0 * (np.power(10, mels / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    min_log_hertz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    freq = 200.0 * mels / 3.0
    return np.where(
        mels >= min_log_mel, min_log_hertz * np.exp(logstep * (mels - min_log_mel)), freq
    )


@functools.lru_cache(maxsize=16)
def mel_filter_bank(
    num_frequency_bins: int,
    num_mel_filters: int,
    min_frequency: float,
    max_frequency: float,
    sampling_rate: int,
    *,
    slaney: bool,
) -> np.ndarray:
    """[num_frequency_bins, num_mel_filters] float64 triangular filters.

    slaney=True: Slaney mel scale with Slaney area norm (librosa's default; "rand_trunc");
    slaney=False: HTK mel scale, no norm (torchaudio's default; "fusion").
    """
    scale = "slaney" if slaney else "htk"
    mel_freqs = np.linspace(
        hertz_to_mel(min_frequency, scale), hertz_to_mel(max_frequency, scale), num_mel_filters + 2
    )
    filter_freqs = mel_to_hertz(mel_freqs, scale)
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)
    filter_diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / filter_diff[:-1]
    up = slopes[:, 2:] / filter_diff[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    if slaney:
        filters = (
            filters
            * (2.0 / (filter_freqs[2 : num_mel_filters + 2] - filter_freqs[:num_mel_filters]))[None]
        )
    filters.setflags(write=False)
    return filters


@functools.lru_cache(maxsize=4)
def hann_window(length: int) -> np.ndarray:
    """Periodic Hann (what torch.hann_window and transformers' window_function("hann") give)."""
    window = np.hanning(length + 1)[:-1]
    window.setflags(write=False)
    return window


def num_frames(num_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT: 1 + samples // hop (1001 for 10 s at 48 kHz, hop 480)."""
    return 1 + num_samples // hop_length


# ---------------------------------------------------------------------------------------------
# Log-mel.


def log_mel_spectrogram(
    waveform: np.ndarray,
    mel_filters: np.ndarray,
    *,
    n_fft: int = 1024,
    hop_length: int = 480,
    floor: float = 1e-10,
) -> np.ndarray:
    """[samples] -> [frames, mel] float32 dB, as transformers' `spectrogram(..., log_mel="dB")`."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"expected one mono waveform [samples], got shape {waveform.shape}")
    padded = np.pad(waveform, (n_fft // 2, n_fft // 2), mode="reflect").astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    spectrum = np.fft.rfft(frames * hann_window(n_fft), axis=-1).astype(
        np.complex64
    )  # as transformers stores it
    power = np.abs(spectrum, dtype=np.float64) ** 2
    mel = np.maximum(floor, power @ mel_filters)
    return (10.0 * np.log10(np.maximum(mel, floor))).astype(np.float32)


def log_mel_jax(
    waveforms,
    mel_filters: np.ndarray,
    *,
    n_fft: int = 1024,
    hop_length: int = 480,
    floor: float = 1e-10,
):
    """[B, samples] -> [B, frames, mel] float32 dB in JAX (jit-friendly; float32 FFT, so bins
    near the 1e-10 floor can differ from the float64 numpy path by a few hundredths of a dB)."""
    import jax
    import jax.numpy as jnp

    waveforms = jnp.asarray(waveforms, jnp.float32)
    padded = jnp.pad(waveforms, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    count = num_frames(waveforms.shape[-1], hop_length)
    index = np.arange(count)[:, None] * hop_length + np.arange(n_fft)[None, :]
    frames = padded[:, index] * jnp.asarray(hann_window(n_fft), jnp.float32)
    spectrum = jnp.fft.rfft(frames, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    mel = jnp.einsum(
        "btf,fm->btm",
        power,
        jnp.asarray(mel_filters, jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )
    return 10.0 * jnp.log10(jnp.maximum(mel, floor))


def shrink_time(mel: np.ndarray, frames: int) -> np.ndarray:
    """[T, mel] -> [frames, mel]: torch bilinear interpolate (align_corners=False) of the time
    axis, as transformers shrinks the whole clip's mel in fusion mode.

    Mirrors torch's float32 CPU kernel bit for bit, including the two fused multiply-adds its
    build contracts: source index = fma(ratio, i + 0.5, -0.5) and out = fma(l0, x0, l1 · x1)
    (plain float32 arithmetic is up to 1.2e-4 dB off).
    """
    mel = np.asarray(mel, np.float32)
    n_in = mel.shape[0]
    if n_in == frames:
        return mel.copy()
    ratio = np.float64(np.float32(n_in) / np.float32(frames))
    real = (ratio * (np.arange(frames) + 0.5) - 0.5).astype(np.float32)  # one rounding: fma
    real = np.maximum(real, np.float32(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    lam1 = np.clip(real - i0.astype(np.float32), 0, 1).astype(np.float32)
    lam0 = np.float32(1) - lam1
    i1 = i0 + (i0 < n_in - 1)
    second = (lam1[:, None] * mel[i1]).astype(np.float32)
    return (lam0[:, None].astype(np.float64) * mel[i0] + second).astype(np.float32)  # fma


def pad_waveform(waveform: np.ndarray, length: int, padding: str = "repeatpad") -> np.ndarray:
    """A clip no longer than `length` brought to `length` samples (transformers' padding modes)."""
    waveform = np.asarray(waveform)
    if len(waveform) == 0:
        raise ValueError("empty waveform")
    if len(waveform) < length:
        if padding == "repeat":
            waveform = np.tile(waveform, length // len(waveform) + 1)[:length]
        elif padding == "repeatpad":
            waveform = np.tile(waveform, length // len(waveform))
        waveform = np.pad(waveform, (0, length - len(waveform)))
    return waveform


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Features:
    features: np.ndarray  # [B, channels, frames, mel] float32 (channels: 4 fusion, 1 rand_trunc)
    is_longer: np.ndarray  # [B] bool


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """transformers' `ClapFeatureExtractor` (its defaults), with explicit randomness."""

    sample_rate: int = 48000
    n_fft: int = 1024
    hop_length: int = 480
    mel_bins: int = 64
    fmin: float = 0.0
    fmax: float = 14000.0
    max_seconds: float = 10.0
    truncation: str = "fusion"
    padding: str = "repeatpad"

    def __post_init__(self):
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {self.truncation!r}")

    @property
    def max_samples(self) -> int:
        return round(self.max_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        return num_frames(self.max_samples, self.hop_length)

    @property
    def channels(self) -> int:
        return 4 if self.truncation == "fusion" else 1

    def mel_filters(self, truncation: str | None = None) -> np.ndarray:
        """The bank a truncation mode uses: HTK/no-norm for "fusion", Slaney for "rand_trunc"."""
        slaney = (truncation or self.truncation) != "fusion"
        return mel_filter_bank(
            self.n_fft // 2 + 1,
            self.mel_bins,
            float(self.fmin),
            float(self.fmax),
            self.sample_rate,
            slaney=slaney,
        )

    @classmethod
    def from_config(cls, config) -> FeatureExtractor:
        """From a LAION `mats_jax.clap.model.ClapConfig`."""
        return cls(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            mel_bins=config.mel_bins,
            fmin=config.fmin,
            fmax=config.fmax,
            max_seconds=config.duration,
            truncation=config.truncation,
            padding=config.padding,
        )

    @classmethod
    def from_hf(cls, preprocessor_config: dict[str, Any]) -> FeatureExtractor:
        """From a `preprocessor_config.json` dict (missing entries keep transformers' defaults)."""
        c = preprocessor_config
        d = cls()
        return cls(
            sample_rate=c.get("sampling_rate", d.sample_rate),
            n_fft=c.get("fft_window_size", d.n_fft),
            hop_length=c.get("hop_length", d.hop_length),
            mel_bins=c.get("feature_size", d.mel_bins),
            fmin=c.get("frequency_min", d.fmin),
            fmax=c.get("frequency_max", d.fmax),
            max_seconds=c.get("max_length_s", d.max_seconds),
            truncation=c.get("truncation", d.truncation),
            padding=c.get("padding", d.padding),
        )

    def log_mel(self, waveform: np.ndarray, truncation: str | None = None) -> np.ndarray:
        return log_mel_spectrogram(
            waveform, self.mel_filters(truncation), n_fft=self.n_fft, hop_length=self.hop_length
        )

    def _one(self, waveform: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """One clip -> ([channels, frames, mel], is_longer), transformers' `_get_input_mel`."""
        max_samples = self.max_samples
        if len(waveform) > max_samples:
            if self.truncation == "rand_trunc":
                start = int(rng.integers(0, len(waveform) - max_samples + 1))
                return self.log_mel(waveform[start : start + max_samples])[None], True
            mel = self.log_mel(waveform)
            chunk, total = self.frames, mel.shape[0]
            if chunk == total:  # longer than 10 s by less than a hop: the whole clip, 4 times
                return np.stack([mel] * 4), False
            ranges = np.array_split(np.arange(total - chunk + 1), 3)
            ranges = [r if len(r) else np.array([0]) for r in ranges]
            starts = [int(r[rng.integers(len(r))]) for r in ranges]  # front, middle, back
            crops = [mel[s : s + chunk] for s in starts]
            return np.stack([shrink_time(mel, chunk), *crops]), True
        mel = self.log_mel(pad_waveform(waveform, max_samples, self.padding))
        return (np.stack([mel] * 4) if self.truncation == "fusion" else mel[None]), False

    def __call__(
        self,
        waveforms: np.ndarray | Sequence[np.ndarray],
        rng: np.random.Generator | int | None = None,
        *,
        mark_one_longer: bool = True,
    ) -> Features:
        """Clips (mono, at `sample_rate`; a [B, samples] array or a list of 1-D arrays of any
        lengths) -> Features. `rng`: a Generator or seed for the crops (None: fresh entropy).
        `mark_one_longer`: transformers' fusion-mode quirk of flagging one random clip as longer
        when none is (that clip then runs the fusion branch on four identical copies)."""
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            waveforms = [waveforms]
        clips = [np.asarray(w) for w in waveforms]
        if any(c.ndim != 1 for c in clips):
            raise ValueError("each clip must be a mono waveform [samples]")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        mels, longer = zip(*(self._one(c, rng) for c in clips))
        is_longer = np.asarray(longer, bool)
        if self.truncation == "fusion" and mark_one_longer and not is_longer.any():
            is_longer[int(rng.integers(0, len(clips)))] = True
        return Features(np.stack(mels).astype(np.float32), is_longer)
