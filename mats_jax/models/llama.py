"""The LLaMA family (LLaMA 1-3, Vicuna, SmolLM2): RMSNorm, RoPE, grouped-query attention, SwiGLU.

Module and parameter names mirror Hugging Face's `LlamaForCausalLM` (without its `model.` prefix)
so that the converter's key map is a rename plus a transpose.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.models.decoder import DecoderLM
from mats_jax.models.layers import Embed, Linear, RMSNorm, attend_with_cache


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3", "factor", "low_freq_factor", ...}
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """From a Hugging Face config.json dict (v4 `rope_theta`/`rope_scaling` or v5
        `rope_parameters`).
        """
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {
            k: v for k, v in hf.items() if k in fields and k not in ("rope_scaling", "rope_theta")
        }
        return cls(
            **kwargs, rope_theta=float(theta), rope_scaling=None if rope_type == "default" else rope
        )

    def to_hf(self) -> dict[str, Any]:
        hf = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("rope_scaling", "rope_theta")
        }
        hf["head_dim"] = self.head_size
        hf["rope_parameters"] = {
            "rope_theta": self.rope_theta,
            "rope_type": "default",
            **(self.rope_scaling or {}),
        }
        hf.update(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu")
        return hf


def rope_frequencies(config: LlamaConfig) -> jax.Array:
    """Inverse frequencies [head_dim/2], with llama3-style scaling when configured."""
    dim = config.head_size
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor, low, high = (
            scaling["factor"],
            scaling["low_freq_factor"],
            scaling["high_freq_factor"],
        )
        old_context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = jnp.where(
            wavelen > old_context / low,
            inv_freq / factor,
            jnp.where(wavelen < old_context / high, inv_freq, smoothed),
        )
    elif kind is not None:
        raise ValueError(f"rope_type {kind!r} is not supported (default, linear, llama3)")
    return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotate-half RoPE (HF layout). x [B,T,N,H], positions [B,T]."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B,T,H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class LlamaAttention(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, h = config.hidden_size, config.head_size
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            h,
        )
        kw = dict(use_bias=config.attention_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(d, self.num_heads * h, axes=("embed", "q_heads"), **kw)
        self.k_proj = Linear(d, self.num_kv_heads * h, axes=("embed", "kv_heads"), **kw)
        self.v_proj = Linear(d, self.num_kv_heads * h, axes=("embed", "kv_heads"), **kw)
        self.o_proj = Linear(self.num_heads * h, d, axes=("q_heads", "embed"), **kw)

    def __call__(self, x, positions, inv_freq, key_mask, cache, cache_index, segment_ids=None):
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        out, cache = attend_with_cache(
            q,
            k,
            v,
            key_mask=key_mask,
            cache=cache,
            cache_index=cache_index,
            segment_ids=segment_ids,
        )
        return self.o_proj(out.reshape(b, t, -1)), cache


class LlamaMLP(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(use_bias=config.mlp_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.up_proj = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.down_proj = Linear(f, d, axes=("mlp", "embed"), **kw)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.self_attn = LlamaAttention(config, rngs=rngs, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.mlp = LlamaMLP(config, rngs=rngs, **kw)

    def __call__(self, x, positions, inv_freq, key_mask, cache, cache_index, segment_ids=None):
        attn, cache = self.self_attn(
            self.input_layernorm(x), positions, inv_freq, key_mask, cache, cache_index, segment_ids
        )
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class Llama(DecoderLM):
    """LlamaForCausalLM. `dtype` is the compute dtype, `param_dtype` the storage dtype."""

    def __init__(
        self, config: LlamaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.config, self.dtype = config, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embed_tokens = Embed(
            config.vocab_size, config.hidden_size, axes=("vocab", "embed"), rngs=rngs, **kw
        )
        self.layers = nnx.List(
            [LlamaDecoderLayer(config, rngs=rngs, **kw) for _ in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(
                config.hidden_size, config.vocab_size, axes=("embed", "vocab"), rngs=rngs, **kw
            )
        )

    def embed(self, tokens):
        return self.embed_tokens(tokens)

    def logits(self, hidden):
        head = self.embed_tokens.attend if self.lm_head is None else self.lm_head
        return head(hidden).astype(jnp.float32)

    def cache_shape(self):
        c = self.config
        return c.num_hidden_layers, c.num_key_value_heads, c.head_size

    def _blocks(self, x, positions, key_mask, cache, cache_index, segment_ids=None):
        inv_freq = rope_frequencies(self.config)
        x, cache = self.run_layers(
            x,
            cache,
            lambda layer, h, c: layer(
                h, positions, inv_freq, key_mask, c, cache_index, segment_ids
            ),
        )
        return self.norm(x), cache
