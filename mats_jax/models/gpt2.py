"""GPT-2: learned positions, pre-LN blocks, `gelu_new`, fused qkv (`c_attn`), tied LM head.

It is MATS-GPT2's LLM and CLAP-2023's text tower. Hugging Face stores GPT-2's `Conv1D` weights
as [in, out] already, so our kernels have the same layout and the key map is a pure rename.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.models.decoder import DecoderLM
from mats_jax.models.layers import Embed, LayerNorm, Linear, attend_with_cache


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None

    @property
    def context_length(self) -> int:
        return self.n_positions

    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> GPT2Config:
        if hf.get("activation_function", "gelu_new") != "gelu_new":
            raise ValueError(
                f"GPT-2 activation_function {hf['activation_function']!r} is not supported"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in fields})

    def to_hf(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "activation_function": "gelu_new",
        }


class GPT2Attention(nnx.Module):
    def __init__(self, config: GPT2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        d = config.n_embd
        self.num_heads = config.n_head
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.c_attn = Linear(d, 3 * d, axes=("embed", "qkv"), **kw)
        self.c_proj = Linear(d, d, axes=("q_heads", "embed"), **kw)

    def __call__(self, x, key_mask, cache, cache_index, segment_ids=None):
        b, t, d = x.shape
        q, k, v = jnp.split(self.c_attn(x).reshape(b, t, 3 * self.num_heads, -1), 3, axis=2)
        out, cache = attend_with_cache(
            q,
            k,
            v,
            key_mask=key_mask,
            cache=cache,
            cache_index=cache_index,
            segment_ids=segment_ids,
        )
        return self.c_proj(out.reshape(b, t, d)), cache


class GPT2MLP(nnx.Module):
    def __init__(self, config: GPT2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = config.n_embd, config.n_inner or 4 * config.n_embd
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.c_fc = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.c_proj = Linear(f, d, axes=("mlp", "embed"), **kw)

    def __call__(self, x):
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=True))  # gelu_new


class GPT2Block(nnx.Module):
    def __init__(self, config: GPT2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(eps=config.layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype)
        self.ln_1 = LayerNorm(config.n_embd, **kw)
        self.attn = GPT2Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_2 = LayerNorm(config.n_embd, **kw)
        self.mlp = GPT2MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, key_mask, cache, cache_index, segment_ids=None):
        attn, cache = self.attn(self.ln_1(x), key_mask, cache, cache_index, segment_ids)
        x = x + attn
        return x + self.mlp(self.ln_2(x)), cache


class GPT2(DecoderLM):
    """GPT2LMHeadModel; `hidden_states` gives GPT2Model's `last_hidden_state` (after ln_f)."""

    def __init__(
        self, config: GPT2Config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.config, self.dtype = config, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.wte = Embed(config.vocab_size, config.n_embd, axes=("vocab", "embed"), rngs=rngs, **kw)
        self.wpe = Embed(
            config.n_positions, config.n_embd, axes=("positions", "embed"), rngs=rngs, **kw
        )
        self.layers = nnx.List([GPT2Block(config, rngs=rngs, **kw) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, **kw)

    def embed(self, tokens):
        return self.wte(tokens)

    def logits(self, hidden):
        return self.wte.attend(hidden).astype(jnp.float32)

    def cache_shape(self):
        c = self.config
        return c.n_layer, c.n_head, c.n_embd // c.n_head

    def _blocks(self, x, positions, key_mask, cache, cache_index, segment_ids=None):
        x, cache = self.run_layers(
            x + self.wpe(positions),
            cache,
            lambda layer, h, c: layer(h, key_mask, c, cache_index, segment_ids),
        )
        return self.ln_f(x), cache
