"""MATS's trainable bridge from a CLAP embedding to LLM input embeddings.

`TransformerMapper` is ClipCap's mapper as MATS uses it: the L2-normalised CLAP embedding is
projected to `clip_length` tokens, a learned `prefix_const` of `prefix_length` tokens is appended,
a pre-LN transformer (no positions, no mask) mixes them, and the last `prefix_length` outputs are
the prefix. `MLPMapper` is the `mapping_type: mlp` variant. The projector is a per-token Linear
to the LLM's hidden size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.config import MapperConfig
from mats_jax.models.layers import LayerNorm, Linear, l2_normalize, param


class MapperAttention(nnx.Module):
    """Self-attention with ClipCap's names: fused keys/values (first half keys), biased output."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.to_queries = Linear(dim, dim, axes=("embed", "q_heads"), rngs=rngs)
        self.to_keys_values = Linear(dim, 2 * dim, axes=("embed", "qkv"), rngs=rngs)
        self.project = Linear(dim, dim, axes=("q_heads", "embed"), use_bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        h = self.num_heads
        q = self.to_queries(x).reshape(b, n, h, c // h)
        kv = self.to_keys_values(x).reshape(b, n, 2, h, c // h)
        k, v = kv[:, :, 0], kv[:, :, 1]
        scores = jnp.einsum("bnhd,bmhd->bhnm", q, k) * (c // h) ** -0.5
        out = jnp.einsum("bhnm,bmhd->bnhd", jax.nn.softmax(scores, axis=-1), v)
        return self.project(out.reshape(b, n, c))


class MapperMLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = Linear(dim, hidden, axes=("embed", "mlp"), use_bias=True, rngs=rngs)
        self.fc2 = Linear(hidden, dim, axes=("mlp", "embed"), use_bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.relu(self.fc1(x)))


class MapperBlock(nnx.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, rngs: nnx.Rngs):
        self.norm1 = LayerNorm(dim, eps=1e-5, rngs=rngs)
        self.attn = MapperAttention(dim, num_heads, rngs=rngs)
        self.norm2 = LayerNorm(dim, eps=1e-5, rngs=rngs)
        self.mlp = MapperMLP(dim, int(dim * mlp_ratio), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerMapper(nnx.Module):
    def __init__(self, config: MapperConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.linear = Linear(
            config.clap_dim,
            config.clip_length * config.dim,
            axes=("clap_embed", "mlp"),
            use_bias=True,
            rngs=rngs,
        )
        self.prefix_const = param(
            rngs,
            nnx.initializers.normal(1.0),
            (config.prefix_length, config.dim),
            jnp.float32,
            ("prefix", "embed"),
        )
        self.layers = nnx.List(
            [
                MapperBlock(config.dim, config.num_heads, config.mlp_ratio, rngs=rngs)
                for _ in range(config.num_layers)
            ]
        )

    def __call__(self, clap_embedding: jax.Array) -> jax.Array:
        """[B, clap_dim] (any norm) -> prefix [B, prefix_length, dim]."""
        c = self.config
        x = self.linear(l2_normalize(clap_embedding)).reshape(-1, c.clip_length, c.dim)
        prefix = jnp.broadcast_to(self.prefix_const[...], (x.shape[0], c.prefix_length, c.dim))
        x = jnp.concatenate([x, prefix], axis=1)
        for layer in self.layers:
            x = layer(x)
        return x[:, c.clip_length :]


class MLPMapper(nnx.Module):
    """ClipCap's MLP mapper: Linear -> tanh -> Linear to prefix_length tokens."""

    def __init__(self, config: MapperConfig, *, rngs: nnx.Rngs):
        self.config = config
        out = config.prefix_length * config.dim
        self.fc1 = Linear(
            config.clap_dim, out // 2, axes=("clap_embed", "mlp"), use_bias=True, rngs=rngs
        )
        self.fc2 = Linear(out // 2, out, axes=("mlp", "embed"), use_bias=True, rngs=rngs)

    def __call__(self, clap_embedding: jax.Array) -> jax.Array:
        x = self.fc2(jnp.tanh(self.fc1(l2_normalize(clap_embedding))))
        return x.reshape(-1, self.config.prefix_length, self.config.dim)


def build_mapper(config: MapperConfig, *, rngs: nnx.Rngs) -> TransformerMapper | MLPMapper:
    kinds = {"transformer": TransformerMapper, "mlp": MLPMapper}
    if config.mapping_type not in kinds:
        raise ValueError(f"mapping_type {config.mapping_type!r} is not one of {sorted(kinds)}")
    return kinds[config.mapping_type](config, rngs=rngs)


class Projector(Linear):
    """Per-token Linear from the mapper's width to the LLM's hidden size (with bias)."""

    def __init__(self, dim: int, llm_hidden: int, *, rngs: nnx.Rngs):
        super().__init__(dim, llm_hidden, axes=("embed", "llm_embed"), use_bias=True, rngs=rngs)
