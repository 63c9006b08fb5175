"""CLAP as MATS uses it (msclap 2023): HTSAT audio tower, GPT-2 text tower, residual projections.

    audio [B, 308700] @ 44.1 kHz --LogMel--> [B, 965, 64] --HTSAT--> latent [B, 768]
        --Projection--> [B, 1024]
    token ids [B, 77] --GPT-2--> hidden [B, 77, 768] --pool--> [B, 768] --Projection--> [B, 1024]

Embeddings are returned as the encoder gives them, *not* L2-normalised (MATS normalises them
itself); `similarity` is msclap's `compute_similarity`.

Text pooling copies msclap exactly: the hidden state at index (number of ids != 0) − 1. GPT-2's
pad token is "!" (id 0), so a caption containing a literal "!" pools one token early — kept on
purpose, that is what the released weights were trained with. Padding is on the right, so under
causal attention the pads never reach the pooled token; no attention mask is needed.

The whole model is frozen in MATS and always runs in eval mode; `deterministic=False` only
enables the projections' dropout (0.5), for completeness.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.audio_frontend import LogMel
from mats_jax.models.gpt2 import GPT2, GPT2Config
from mats_jax.models.htsat import HTSAT, HTSATConfig, HTSATOutput
from mats_jax.models.layers import LayerNorm, Linear, param

TEXT_ENCODERS = ("gpt2",)


@dataclasses.dataclass(frozen=True)
class ClapConfig:
    """msclap 2023 (`CLAP_weights_2023.pth`) by default."""

    # audio input and front end (the mel bank is built for 32 kHz although audio is 44.1 kHz)
    sample_rate: int = 44100
    duration: float = 7.0
    n_fft: int = 1024
    hop_length: int = 320
    mel_bins: int = 64
    mel_sample_rate: int = 32000
    fmin: float = 50.0
    fmax: float = 14000.0
    audio: HTSATConfig = HTSATConfig()
    # text
    text_encoder: str = "gpt2"
    text: GPT2Config = GPT2Config()
    text_len: int = 77
    pad_token_id: int = 0  # "!" in GPT-2's vocabulary
    # joint space
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder {self.text_encoder!r} is not supported {TEXT_ENCODERS}")

    @property
    def num_samples(self) -> int:
        return round(self.sample_rate * self.duration)

    @property
    def audio_dim(self) -> int:
        return self.audio.num_features

    @property
    def text_dim(self) -> int:
        return self.text.n_embd

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return d | {"audio": self.audio.to_dict(), "text": dataclasses.asdict(self.text)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClapConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown CLAP config fields {sorted(unknown)}")
        d = dict(d)
        if "audio" in d:
            d["audio"] = HTSATConfig.from_dict(d["audio"])
        if "text" in d:
            d["text"] = GPT2Config(**d["text"])
        return cls(**d)


class Projection(nnx.Module):
    """msclap's head: e1 = linear1(x); e2 = dropout(linear2(gelu(e1))); LayerNorm(e1 + e2). No biases."""

    def __init__(self, d_in: int, d_out: int, *, dropout: float, eps: float, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear1 = Linear(d_in, d_out, axes=("embed", "joint"), **kw)
        self.linear2 = Linear(d_out, d_out, axes=("joint_in", "joint"), **kw)
        self.layer_norm = LayerNorm(d_out, eps=eps, axis_name="joint", dtype=dtype,
                                    param_dtype=param_dtype)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        e1 = self.linear1(x)
        e2 = self.dropout(self.linear2(jax.nn.gelu(e1, approximate=False)), deterministic=deterministic)
        return self.layer_norm(e1 + e2)


class CLAP(nnx.Module):
    def __init__(self, config: ClapConfig = ClapConfig(), *, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config, self.dtype = config, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        proj = dict(dropout=config.projection_dropout, eps=config.layer_norm_eps, **kw)
        # the front end stays in float32 (dB of a power spectrum)
        self.audio_frontend = LogMel(n_fft=config.n_fft, hop_length=config.hop_length,
                                     mel_bins=config.mel_bins, mel_sample_rate=config.mel_sample_rate,
                                     fmin=config.fmin, fmax=config.fmax, rngs=rngs)
        self.audio_encoder = HTSAT(config.audio, **kw)
        self.audio_projection = Projection(config.audio_dim, config.projection_dim, **proj)
        self.text_encoder = GPT2(config.text, **kw)
        self.text_projection = Projection(config.text_dim, config.projection_dim, **proj)
        self.logit_scale = param(rngs, nnx.initializers.constant(math.log(1 / 0.07)), (),
                                 jnp.float32, ())

    # audio -------------------------------------------------------------------------------
    def log_mel(self, waveform: jax.Array) -> jax.Array:
        """[B, samples] -> [B, frames, mel_bins] (float32 dB)."""
        return self.audio_frontend(waveform)

    def encode_audio(self, waveform: jax.Array) -> HTSATOutput:
        """HTSAT outputs (latent, token grid, AudioSet clipwise/framewise probabilities)."""
        return self.audio_encoder(self.log_mel(waveform))

    def embed_audio(self, waveform: jax.Array, *, deterministic: bool = True
                    ) -> tuple[jax.Array, jax.Array]:
        """[B, samples] (7 s at 44.1 kHz) -> (embedding [B, 1024], latent [B, 768]), not normalised."""
        latent = self.encode_audio(waveform).latent
        return self.audio_projection(latent, deterministic=deterministic), latent

    # text --------------------------------------------------------------------------------
    def pool_index(self, token_ids: jax.Array) -> jax.Array:
        """msclap's pooled position: count(ids != pad) - 1 (negative wraps, as torch indexing)."""
        index = jnp.sum(token_ids != self.config.pad_token_id, axis=-1) - 1
        return jnp.where(index < 0, index + token_ids.shape[-1], index)

    def text_features(self, token_ids: jax.Array) -> jax.Array:
        """[B, T] ids (right-padded with the pad id) -> pooled GPT-2 state [B, 768]."""
        hidden, _ = self.text_encoder.hidden_states(token_ids)
        index = self.pool_index(token_ids)
        return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]

    def embed_text(self, token_ids: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """[B, text_len] token ids -> [B, 1024] embedding, not normalised."""
        return self.text_projection(self.text_features(token_ids), deterministic=deterministic)

    # both --------------------------------------------------------------------------------
    def similarity(self, audio_embeddings: jax.Array, text_embeddings: jax.Array) -> jax.Array:
        """msclap's compute_similarity: exp(logit_scale) · cos(audio_i, text_j), [n_audio, n_text]."""
        a = audio_embeddings / jnp.linalg.norm(audio_embeddings, axis=-1, keepdims=True)
        t = text_embeddings / jnp.linalg.norm(text_embeddings, axis=-1, keepdims=True)
        return jnp.exp(self.logit_scale[...]) * (a @ t.T)


# Jitted entry points taking (graphdef, state): one compilation per model structure and input
# shape, shared by every caller in the process.

@functools.partial(jax.jit, static_argnums=0)
def _embed_audio(graphdef, state, waveform):
    return nnx.merge(graphdef, state).embed_audio(waveform)


@functools.partial(jax.jit, static_argnums=0)
def _embed_text(graphdef, state, token_ids):
    return nnx.merge(graphdef, state).embed_text(token_ids)


def embed_audio_fn(model: CLAP):
    """A jitted `waveform -> (embedding, latent)` for eval-mode use of `model`."""
    graphdef, state = nnx.split(model)
    return lambda waveform: _embed_audio(graphdef, state, waveform)


def embed_text_fn(model: CLAP):
    """A jitted `token_ids -> embedding` for eval-mode use of `model`."""
    graphdef, state = nnx.split(model)
    return lambda token_ids: _embed_text(graphdef, state, token_ids)
