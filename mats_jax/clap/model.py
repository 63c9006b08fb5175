"""CLAP: HTSAT audio tower + text tower + projections, in two families (`ClapConfig.family`).

"clap-msclap-2023" (the default; what MATS uses): GPT-2 text tower, residual projections.

    audio [B, 308700] @ 44.1 kHz --LogMel--> [B, 965, 64] --HTSAT--> latent [B, 768]
        --Projection--> [B, 1024]
    token ids [B, 77] --GPT-2--> hidden [B, 77, 768] --pool--> [B, 768] --Projection--> [B, 1024]

Embeddings are returned as the encoder gives them, *not* L2-normalised (MATS normalises them
itself); `similarity` is msclap's `compute_similarity`.

Text pooling copies msclap exactly: the hidden state at index (number of ids != 0) − 1. GPT-2's
pad token is "!" (id 0), so a caption containing a literal "!" pools one token early — kept on
purpose, that is what the released weights were trained with. Padding is on the right, so under
causal attention the pads never reach the pooled token; no attention mask is needed.

The whole model is frozen in MATS and runs in eval mode here. The text tower's train mode
(GPT-2's dropouts and the projection's, as the original MATS trains with it) is
`mats_jax.clap.text_dropout.TrainModeText`; `Projection` takes the key of its dropout mask.

"clap-laion" (transformers' `ClapModel`, `ClapConfig.laion()`): the same HTSAT on LAION's features
(`mats_jax.clap.laion_features`: 48 kHz, hop 480, 10 s -> 1001 frames, bicubic to 1024; optionally
the fused 4-channel input with `is_longer`), a RoBERTa text tower pooled by its pooler (token 0),
ReLU-MLP projections with biases to 512-d, L2-normalised, and two temperatures
(`logit_scale_a`, `logit_scale_t`):

    features [B, (4,) 1001, 64] (+ is_longer [B]) --HTSAT--> latent [B, 768]
        --MLPProjection, L2-normalise--> [B, 512]
    token ids [B, T] (+ attention mask) --RoBERTa + pooler--> [B, 768]
        --MLPProjection, L2-normalise--> [B, 512]

Random crops of long clips happen on the host (`FeatureExtractor`); `embed_audio(waveform)`
computes the log-mel in JAX for batches already cut/padded to 10 s (no crops, is_longer False).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.clap import laion_features
from mats_jax.clap.htsat import HTSAT, HTSATConfig, HTSATOutput
from mats_jax.clap.msclap_features import LogMel
from mats_jax.clap.roberta import RoBERTa, RobertaConfig
from mats_jax.config import dataclass_fields
from mats_jax.models.gpt2 import GPT2, GPT2Config
from mats_jax.models.layers import LayerNorm, Linear, l2_normalize, param
from mats_jax.models.registry import Family, register

MSCLAP_2023 = "clap-msclap-2023"  # family names, as `mats_jax.models.registry` knows them
LAION = "clap-laion"
FAMILIES = (MSCLAP_2023, LAION)
_EARLIER_SPELLINGS = {
    "msclap-2023": MSCLAP_2023,
    "laion": LAION,
}  # in folders written before the registry
STATE_KINDS = (nnx.Param, nnx.BatchStat)  # what a CLAP checkpoint holds (bn0 statistics included)
TEXT_ENCODERS = ("gpt2", "roberta")
TEXT_CONFIGS = {"gpt2": GPT2Config, "roberta": RobertaConfig}


@dataclasses.dataclass(frozen=True)
class ClapConfig:
    """msclap 2023 (`CLAP_weights_2023.pth`) by default; `ClapConfig.laion()` for LAION-CLAP."""

    family: str = MSCLAP_2023

    # audio input and front end (the mel bank is built for 32 kHz although audio is 44.1 kHz)
    sample_rate: int = 44100
    duration: float = 7.0
    n_fft: int = 1024
    hop_length: int = 320
    mel_bins: int = 64
    mel_sample_rate: int = 32000
    fmin: float = 50.0
    fmax: float = 14000.0
    # LAION only (laion_features): long clips "rand_trunc" (Slaney bank) or "fusion" (HTK bank, 4
    # channels); short clips "repeatpad" / "repeat" (msclap's own loader tiles and cuts)
    truncation: str = "rand_trunc"
    padding: str = "repeat"
    audio: HTSATConfig = HTSATConfig()
    # text
    text_encoder: str = "gpt2"
    text: GPT2Config | RobertaConfig = GPT2Config()
    text_len: int = 77
    pad_token_id: int = 0  # "!" in GPT-2's vocabulary
    # joint space
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"CLAP family {self.family!r} is not supported {FAMILIES}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder {self.text_encoder!r} is not supported {TEXT_ENCODERS}")
        expected = "roberta" if self.family == LAION else "gpt2"
        if self.text_encoder != expected:
            raise ValueError(
                f"the {self.family} family has a {expected} text tower, not {self.text_encoder!r}"
            )
        if not isinstance(self.text, TEXT_CONFIGS[self.text_encoder]):
            raise ValueError(
                f"text_encoder {self.text_encoder!r} needs a "
                f"{TEXT_CONFIGS[self.text_encoder].__name__}"
            )
        if self.family == LAION:
            if self.truncation not in laion_features.TRUNCATIONS:
                raise ValueError(f"truncation must be one of {laion_features.TRUNCATIONS}")
            if (self.truncation == "fusion") != self.audio.fusion:
                raise ValueError(
                    "truncation 'fusion' goes with a fused audio tower (audio.fusion) "
                    "and only with it"
                )

    @classmethod
    def laion(cls, fusion: bool = False, **overrides) -> ClapConfig:
        """transformers' `ClapConfig()` defaults (HTSAT-tiny, roberta-base, 512-d) and its
        feature extractor's (48 kHz, 10 s, fmin 0, fmax 14000, repeatpad)."""
        defaults = dict(
            family=LAION,
            sample_rate=48000,
            duration=10.0,
            n_fft=1024,
            hop_length=480,
            mel_bins=64,
            mel_sample_rate=48000,
            fmin=0.0,
            fmax=14000.0,
            truncation="fusion" if fusion else "rand_trunc",
            padding="repeatpad",
            audio=HTSATConfig(tscam=False, fusion=fusion),
            text_encoder="roberta",
            text=RobertaConfig(),
            text_len=77,
            pad_token_id=1,
            projection_dim=512,
            projection_dropout=0.0,
        )
        return cls(**(defaults | overrides))

    @property
    def feature_extractor(self) -> laion_features.FeatureExtractor:
        """LAION's host-side feature extractor for this config."""
        if self.family != LAION:
            raise ValueError("msclap computes its log-mel inside the model (CLAP.log_mel)")
        return laion_features.FeatureExtractor.from_config(self)

    @property
    def num_samples(self) -> int:
        return round(self.sample_rate * self.duration)

    @property
    def audio_dim(self) -> int:
        return self.audio.num_features

    @property
    def text_dim(self) -> int:
        return self.text.hidden_size

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return d | {"audio": self.audio.to_dict(), "text": dataclasses.asdict(self.text)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClapConfig:
        d = dataclass_fields(cls, d, "CLAP")
        d["family"] = _EARLIER_SPELLINGS.get(
            d.get("family", MSCLAP_2023), d.get("family", MSCLAP_2023)
        )
        if "audio" in d:
            d["audio"] = HTSATConfig.from_dict(d["audio"])
        if "text" in d:
            d["text"] = TEXT_CONFIGS[d.get("text_encoder", "gpt2")](**d["text"])
        return cls(**d)

    @classmethod
    def from_hf(
        cls, hf_config: dict[str, Any], preprocessor: dict[str, Any] | None = None
    ) -> ClapConfig:
        """A LAION config from a transformers `ClapModel` config.json dict (and, if the folder
        has one, its preprocessor_config.json). Missing entries take transformers' defaults;
        variants this port does not implement raise ValueError."""
        if hf_config.get("model_type") != "clap":
            raise ValueError(f"model_type is {hf_config.get('model_type')!r}, not 'clap'")
        audio, text = hf_config.get("audio_config") or {}, hf_config.get("text_config") or {}
        act = hf_config.get("projection_hidden_act", "relu")
        unsupported = {
            "audio hidden_act": (audio.get("hidden_act", "gelu"), "gelu"),
            "projection_hidden_act": (act, "relu"),
            "enable_patch_layer_norm": (audio.get("enable_patch_layer_norm", True), True),
            "flatten_patch_embeds": (audio.get("flatten_patch_embeds", True), True),
            "patch_stride": (
                _pair(audio.get("patch_stride", 4)),
                _pair(audio.get("patch_size", 4)),
            ),
        }
        for name, (value, wanted) in unsupported.items():
            if value != wanted:
                raise ValueError(f"{name} {value!r} is not supported (only {wanted!r})")
        fusion = bool(audio.get("enable_fusion", False))
        if fusion and audio.get("fusion_type") == "channel_map":
            raise ValueError("fusion_type 'channel_map' is not supported (only the AFF block)")
        patch = _pair(audio.get("patch_size", 4))
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patch_size {patch} is not supported")
        htsat = HTSATConfig(
            mel_bins=audio.get("num_mel_bins", 64),
            spec_size=audio.get("spec_size", 256),
            patch_size=patch[0],
            in_channels=audio.get("patch_embed_input_channels", 1),
            embed_dim=audio.get("patch_embeds_hidden_size", 96),
            depths=tuple(audio.get("depths", (2, 2, 6, 2))),
            num_heads=tuple(audio.get("num_attention_heads", (4, 8, 16, 32))),
            window_size=audio.get("window_size", 8),
            mlp_ratio=audio.get("mlp_ratio", 4.0),
            qkv_bias=audio.get("qkv_bias", True),
            layer_norm_eps=audio.get("layer_norm_eps", 1e-5),
            tscam=False,
            fusion=fusion,
            fusion_reduction=audio.get("aff_block_r", 4),
        )
        if audio.get("hidden_size", htsat.num_features) != htsat.num_features:
            raise ValueError(
                f"audio hidden_size {audio['hidden_size']} != HTSAT features {htsat.num_features}"
            )
        extractor = laion_features.FeatureExtractor.from_hf(
            preprocessor
            if preprocessor is not None
            else {"truncation": "fusion" if fusion else "rand_trunc"}
        )
        roberta = RobertaConfig.from_hf(text)
        return cls.laion(
            fusion=fusion,
            sample_rate=extractor.sample_rate,
            duration=float(extractor.max_seconds),
            n_fft=extractor.n_fft,
            hop_length=extractor.hop_length,
            mel_bins=extractor.mel_bins,
            mel_sample_rate=extractor.sample_rate,
            fmin=float(extractor.fmin),
            fmax=float(extractor.fmax),
            truncation=extractor.truncation,
            padding=extractor.padding,
            audio=htsat,
            text=roberta,
            pad_token_id=roberta.pad_token_id,
            projection_dim=hf_config.get("projection_dim", 512),
        )


def _pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


class Projection(nnx.Module):
    """msclap's head: e1 = linear1(x); e2 = dropout(linear2(gelu(e1))); LayerNorm(e1 + e2).
    No biases.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        dropout: float,
        eps: float,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear1 = Linear(d_in, d_out, axes=("embed", "joint"), **kw)
        self.linear2 = Linear(d_out, d_out, axes=("joint_in", "joint"), **kw)
        self.layer_norm = LayerNorm(
            d_out, eps=eps, axis_name="joint", dtype=dtype, param_dtype=param_dtype
        )
        self.dropout = nnx.Dropout(dropout)  # no stream of its own: the caller keys each mask

    def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        """Eval mode, or train mode (dropout on the linear2 branch) with a `dropout_key`."""
        e1 = self.linear1(x)
        e2 = self.dropout(
            self.linear2(jax.nn.gelu(e1, approximate=False)),
            deterministic=dropout_key is None,
            rngs=dropout_key,
        )
        return self.layer_norm(e1 + e2)


class MLPProjection(nnx.Module):
    """LAION's head: linear2(relu(linear1(x))), both with biases (normalised by the caller)."""

    def __init__(
        self, d_in: int, d_out: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear1 = Linear(d_in, d_out, axes=("embed", "joint"), **kw)
        self.linear2 = Linear(d_out, d_out, axes=("joint_in", "joint"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear2(jax.nn.relu(self.linear1(x)))


class CLAP(nnx.Module):
    def __init__(
        self,
        config: ClapConfig = ClapConfig(),
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config, self.dtype = config, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if config.family == LAION:
            self.audio_encoder = HTSAT(config.audio, **kw)
            self.audio_projection = MLPProjection(config.audio_dim, config.projection_dim, **kw)
            self.text_encoder = RoBERTa(config.text, **kw)
            self.text_projection = MLPProjection(config.text_dim, config.projection_dim, **kw)
            init = nnx.initializers.constant(math.log(1 / 0.07))
            self.logit_scale_a = param(rngs, init, (), jnp.float32, ())
            self.logit_scale_t = param(rngs, init, (), jnp.float32, ())
            return
        proj = dict(dropout=config.projection_dropout, eps=config.layer_norm_eps, **kw)
        # the front end stays in float32 (dB of a power spectrum)
        self.audio_frontend = LogMel(
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            mel_bins=config.mel_bins,
            mel_sample_rate=config.mel_sample_rate,
            fmin=config.fmin,
            fmax=config.fmax,
            rngs=rngs,
        )
        self.audio_encoder = HTSAT(config.audio, **kw)
        self.audio_projection = Projection(config.audio_dim, config.projection_dim, **proj)
        self.text_encoder = GPT2(config.text, **kw)
        self.text_projection = Projection(config.text_dim, config.projection_dim, **proj)
        self.logit_scale = param(
            rngs, nnx.initializers.constant(math.log(1 / 0.07)), (), jnp.float32, ()
        )

    @property
    def laion(self) -> bool:
        return self.config.family == LAION

    # audio -------------------------------------------------------------------------------
    def log_mel(self, waveform: jax.Array) -> jax.Array:
        """[B, samples] -> [B, frames, mel_bins] (float32 dB). LAION: the extractor's log-mel of
        the truncation mode's bank, for clips already cut/padded to `duration`."""
        if self.laion:
            c = self.config
            filters = c.feature_extractor.mel_filters()
            return laion_features.log_mel_jax(
                waveform, filters, n_fft=c.n_fft, hop_length=c.hop_length
            )
        return self.audio_frontend(waveform)

    def audio_features(self, waveform: jax.Array) -> jax.Array:
        """The HTSAT input for [B, samples]: msclap's log-mel; LAION's [B, channels, frames, mel]
        (fusion: four copies of the clip's mel, as the extractor gives clips of ≤ 10 s)."""
        mel = self.log_mel(waveform)
        if self.laion:
            return jnp.repeat(mel[:, None], 4 if self.config.audio.fusion else 1, axis=1)
        return mel

    def encode_audio(self, waveform: jax.Array) -> HTSATOutput:
        """HTSAT outputs (latent, token grid, AudioSet clipwise/framewise probabilities)."""
        return self.audio_encoder(self.audio_features(waveform))

    def encode_audio_features(
        self, features: jax.Array, is_longer: jax.Array | None = None
    ) -> HTSATOutput:
        """HTSAT on precomputed features: msclap log-mel [B, frames, mel]; LAION
        `FeatureExtractor` output [B, channels, frames, mel] and its is_longer [B] (fusion)."""
        return self.audio_encoder(features, is_longer)

    def _project_audio(self, latent: jax.Array) -> jax.Array:
        embedding = self.audio_projection(latent)
        return l2_normalize(embedding) if self.laion else embedding

    def embed_audio(self, waveform: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, samples] (msclap: 7 s at 44.1 kHz; LAION: 10 s at 48 kHz) -> (embedding, latent):
        msclap [B, 1024] not normalised; LAION [B, 512] L2-normalised; latent [B, 768]."""
        latent = self.encode_audio(waveform).latent
        return self._project_audio(latent), latent

    def embed_audio_features(
        self, features: jax.Array, is_longer: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """`embed_audio` from precomputed features (see `encode_audio_features`)."""
        latent = self.encode_audio_features(features, is_longer).latent
        return self._project_audio(latent), latent

    # text --------------------------------------------------------------------------------
    def pool_index(self, token_ids: jax.Array) -> jax.Array:
        """msclap's pooled position: count(ids != pad) - 1 (negative wraps, as torch indexing)."""
        index = jnp.sum(token_ids != self.config.pad_token_id, axis=-1) - 1
        return jnp.where(index < 0, index + token_ids.shape[-1], index)

    def text_features(
        self, token_ids: jax.Array, attention_mask: jax.Array | None = None
    ) -> jax.Array:
        """[B, T] ids (right-padded with the pad id) -> pooled text state [B, 768].

        msclap: GPT-2 state at `pool_index` (the mask is not needed: causal attention and right
        padding). LAION: RoBERTa's pooler on token 0, attending where `attention_mask` is 1
        (None: everywhere, as transformers does).
        """
        if self.laion:
            return self.text_encoder(token_ids, attention_mask)[1]
        hidden, _ = self.text_encoder.hidden_states(token_ids)
        index = self.pool_index(token_ids)
        return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]

    def embed_text(
        self, token_ids: jax.Array, attention_mask: jax.Array | None = None
    ) -> jax.Array:
        """[B, text_len] token ids -> embedding: msclap [B, 1024] not normalised; LAION [B, 512]
        L2-normalised."""
        embedding = self.text_projection(self.text_features(token_ids, attention_mask))
        return l2_normalize(embedding) if self.laion else embedding

    # both --------------------------------------------------------------------------------
    def similarity(self, audio_embeddings: jax.Array, text_embeddings: jax.Array) -> jax.Array:
        """exp(logit scale) · cos(audio_i, text_j), [n_audio, n_text]: msclap's
        compute_similarity; LAION's logits_per_audio (logit_scale_a; its transpose with
        logit_scale_t is logits_per_text)."""
        a = audio_embeddings / jnp.linalg.norm(audio_embeddings, axis=-1, keepdims=True)
        t = text_embeddings / jnp.linalg.norm(text_embeddings, axis=-1, keepdims=True)
        scale = self.logit_scale_a if self.laion else self.logit_scale
        return jnp.exp(scale[...]) * (a @ t.T)


# Jitted entry points taking (graphdef, state): one compilation per model structure and input
# shape, shared by every caller in the process.


@functools.partial(jax.jit, static_argnums=0)
def _embed_audio(graphdef, state, waveform):
    return nnx.merge(graphdef, state).embed_audio(waveform)


@functools.partial(jax.jit, static_argnums=0)
def _embed_audio_features(graphdef, state, features, is_longer):
    return nnx.merge(graphdef, state).embed_audio_features(features, is_longer)


@functools.partial(jax.jit, static_argnums=0)
def _embed_text(graphdef, state, token_ids, attention_mask):
    return nnx.merge(graphdef, state).embed_text(token_ids, attention_mask)


def embed_audio_fn(model: CLAP):
    """A jitted `waveform -> (embedding, latent)` for eval-mode use of `model`."""
    graphdef, state = nnx.split(model)
    return lambda waveform: _embed_audio(graphdef, state, waveform)


def embed_audio_features_fn(model: CLAP):
    """A jitted `(features, is_longer=None) -> (embedding, latent)` for eval-mode use of `model`."""
    graphdef, state = nnx.split(model)
    return lambda features, is_longer=None: _embed_audio_features(
        graphdef, state, features, is_longer
    )


def embed_text_fn(model: CLAP):
    """A jitted `(token_ids, attention_mask=None) -> embedding` for eval-mode use of `model`."""
    graphdef, state = nnx.split(model)
    return lambda token_ids, attention_mask=None: _embed_text(
        graphdef, state, token_ids, attention_mask
    )


for _name in FAMILIES:
    register(Family(_name, ClapConfig, CLAP))
