"""RoBERTa encoder (transformers `RobertaModel` / `ClapTextModel`): LAION-CLAP's text tower.

    ids [B, T] --word + position + token-type(0) embeddings, LayerNorm--> post-LN encoder
        (x = LN(x + attn(x)); x = LN(x + mlp(x)), exact GELU) --> hidden [B, T, d]
        --pooler: tanh(dense(hidden[:, 0]))--> [B, d]

Positions are padding-aware as in fairseq/transformers: a real token's position is
pad_token_id + (its rank among the non-pad tokens), a pad token's is pad_token_id, so positions
start at pad_token_id + 1 (= 2 for roberta-base) and pads reuse the pad row. Attention sees the
keys the attention mask allows (all of them when no mask is given, as in transformers, which
does not infer a mask from pad ids). Frozen in MATS: no dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.models.layers import Embed, LayerNorm, Linear, attention


@dataclasses.dataclass(frozen=True)
class RobertaConfig:
    """roberta-base shapes; the defaults are transformers' `ClapTextConfig` (eps 1e-12)."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> RobertaConfig:
        """From a transformers text config dict (RobertaConfig / ClapTextConfig)."""
        act = hf.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"RoBERTa hidden_act {act!r} is not supported (only exact 'gelu')")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in fields and v is not None})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class RobertaAttention(nnx.Module):
    def __init__(self, config: RobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = Linear(d, d, axes=("embed", "q_heads"), **kw)
        self.key = Linear(d, d, axes=("embed", "kv_heads"), **kw)
        self.value = Linear(d, d, axes=("embed", "kv_heads"), **kw)
        self.output = Linear(d, d, axes=("q_heads", "embed"), **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, T, d]; mask [B, T, T] bool (query, key) -> [B, T, d]."""
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, d // self.num_heads)
        out = attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), mask)
        return self.output(out.reshape(b, t, d))


class RobertaLayer(nnx.Module):
    """Post-LN: x = LN(x + attention(x)); x = LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self, config: RobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ln = dict(eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.attention = RobertaAttention(config, **kw)
        self.attention_norm = LayerNorm(d, **ln)
        self.intermediate = Linear(d, f, axes=("embed", "mlp"), use_bias=True, **kw)
        self.output = Linear(f, d, axes=("mlp", "embed"), use_bias=True, **kw)
        self.output_norm = LayerNorm(d, **ln)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.attention_norm(x + self.attention(x, mask))
        return self.output_norm(
            x + self.output(jax.nn.gelu(self.intermediate(x), approximate=False))
        )


class RoBERTa(nnx.Module):
    def __init__(
        self,
        config: RobertaConfig = RobertaConfig(),
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config, self.dtype = config, dtype
        d = config.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.word_embeddings = Embed(config.vocab_size, d, axes=("vocab", "embed"), rngs=rngs, **kw)
        self.position_embeddings = Embed(
            config.max_position_embeddings, d, axes=("positions", "embed"), rngs=rngs, **kw
        )
        self.token_type_embeddings = Embed(
            config.type_vocab_size, d, axes=("token_types", "embed"), rngs=rngs, **kw
        )
        self.embeddings_norm = LayerNorm(d, eps=config.layer_norm_eps, **kw)
        self.layers = nnx.List(
            [RobertaLayer(config, rngs=rngs, **kw) for _ in range(config.num_hidden_layers)]
        )
        self.pooler = Linear(d, d, axes=("embed_in", "embed"), use_bias=True, rngs=rngs, **kw)

    def position_ids(self, token_ids: jax.Array) -> jax.Array:
        """pad + rank among non-pad tokens for real tokens, pad for pads (fairseq's
        make_positions).
        """
        pad = self.config.pad_token_id
        real = (token_ids != pad).astype(jnp.int32)
        return jnp.cumsum(real, axis=-1) * real + pad

    def hidden_states(
        self, token_ids: jax.Array, attention_mask: jax.Array | None = None
    ) -> jax.Array:
        """[B, T] ids (and optional [B, T] 0/1 mask) -> last hidden state [B, T, d]."""
        x = (
            self.word_embeddings(token_ids)
            + self.token_type_embeddings(jnp.zeros_like(token_ids))
            + self.position_embeddings(self.position_ids(token_ids))
        )
        x = self.embeddings_norm(x)
        if attention_mask is None:
            attention_mask = jnp.ones(token_ids.shape, bool)
        mask = jnp.broadcast_to(
            attention_mask.astype(bool)[:, None, :],
            (token_ids.shape[0], token_ids.shape[1], token_ids.shape[1]),
        )
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def pool(self, hidden: jax.Array) -> jax.Array:
        """RoBERTa's pooler: tanh(dense(first token))."""
        return jnp.tanh(self.pooler(hidden[:, 0]))

    def __call__(
        self, token_ids: jax.Array, attention_mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """-> (last hidden state [B, T, d], pooled [B, d])."""
        hidden = self.hidden_states(token_ids, attention_mask)
        return hidden, self.pool(hidden)
