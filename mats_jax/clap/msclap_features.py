"""msclap-2023's log-mel front end (torchlibrosa Spectrogram + LogmelFilterBank) in JAX.

waveform [B, N] -> reflect pad n_fft/2 on both sides -> frames of n_fft every hop samples
(1 + N // hop of them: 965 for 308,700 samples) -> windowed DFT -> power -> 64-bin mel
-> 10·log10(clamp(·, 1e-10)).  [B, frames, mel_bins]

The windowed DFT matrices (torchlibrosa's `conv_real`/`conv_imag`, periodic Hann folded in) and
the mel bank (`melW`, Slaney, built for sr = 32 kHz although the audio is 44.1 kHz — an msclap
quirk) are checkpoint parameters, frozen; we take them from the checkpoint rather than rebuild
them. The STFT is one matmul: frames [B·T, n_fft] @ [n_fft, 2·bins] (real | imaginary).

Frames are cut without a gather: with hop h, the padded signal is viewed as [chunks, h] and
frame t is chunks t, t+1, … concatenated and trimmed to n_fft.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.models.layers import param, per_clip


def stft_matrices(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """torchlibrosa's windowed DFT as [n_fft, n_fft//2+1] real and imaginary parts (periodic Hann).

    Only for building random models and tests: converted models carry the checkpoint's values.
    """
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    bins = np.arange(n_fft // 2 + 1)
    angle = -2j * np.pi * np.outer(n, bins) / n_fft  # W[n, k] = exp(-2πi nk/N)
    w = np.exp(angle) * window[:, None]
    return np.real(w).astype(np.float32), np.imag(w).astype(np.float32)


def mel_bank(sample_rate: int, n_fft: int, mel_bins: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_fft//2+1, mel_bins] Slaney mel filters (librosa's defaults, as torchlibrosa builds
    melW).
    """
    import librosa  # heavy import, only when a model is built from scratch

    return librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=mel_bins, fmin=fmin, fmax=fmax
    ).T.astype(np.float32)


def frame(signal: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """[B, N] (already padded) -> [B, 1 + (N - n_fft) // hop, n_fft] overlapping frames."""
    b, n = signal.shape
    frames = 1 + (n - n_fft) // hop
    taps = -(-n_fft // hop)  # chunks per frame
    needed = (frames + taps - 1) * hop
    signal = jnp.pad(signal, ((0, 0), (0, max(0, needed - n))))[:, :needed]
    chunks = signal.reshape(b, frames + taps - 1, hop)
    out = jnp.concatenate([chunks[:, i : i + frames] for i in range(taps)], axis=-1)
    return out[..., :n_fft]


class LogMel(nnx.Module):
    """Log-mel spectrogram with the STFT and mel matrices as (frozen) parameters."""

    def __init__(
        self,
        *,
        n_fft: int = 1024,
        hop_length: int = 320,
        mel_bins: int = 64,
        mel_sample_rate: int = 32000,
        fmin: float = 50.0,
        fmax: float = 14000.0,
        amin: float = 1e-10,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.n_fft, self.hop_length, self.amin = n_fft, hop_length, amin
        bins = n_fft // 2 + 1
        real, imag = stft_matrices(n_fft)
        self.stft_real = param(
            rngs,
            lambda *_: jnp.asarray(real, param_dtype),
            (n_fft, bins),
            param_dtype,
            ("window", "frequency"),
        )
        self.stft_imag = param(
            rngs,
            lambda *_: jnp.asarray(imag, param_dtype),
            (n_fft, bins),
            param_dtype,
            ("window", "frequency"),
        )
        mel = mel_bank(mel_sample_rate, n_fft, mel_bins, fmin, fmax)
        self.mel_filters = param(
            rngs,
            lambda *_: jnp.asarray(mel, param_dtype),
            (bins, mel_bins),
            param_dtype,
            ("frequency", "mel"),
        )

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def power_spectrogram(self, waveform: jax.Array) -> jax.Array:
        """[B, N] -> |STFT|² [B, frames, n_fft//2+1] (float32)."""
        pad = self.n_fft // 2
        x = jnp.pad(waveform.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
        frames = frame(x, self.n_fft, self.hop_length)
        dft = jnp.concatenate([self.stft_real[...], self.stft_imag[...]], axis=1).astype(
            jnp.float32
        )
        spec = frames @ dft
        real, imag = jnp.split(spec, 2, axis=-1)
        return real * real + imag * imag

    def __call__(self, waveform: jax.Array) -> jax.Array:
        """[B, N] waveform -> [B, 1 + N // hop, mel_bins] log-mel in dB (float32)."""

        def log_mel(wave):
            mel = self.power_spectrogram(wave) @ self.mel_filters[...].astype(jnp.float32)
            return 10.0 * jnp.log10(jnp.maximum(mel, self.amin))

        return per_clip(log_mel, waveform)  # clip by clip on CPU: [frames, n_fft] stays in cache
