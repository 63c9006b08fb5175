"""What every decoder-only LM here offers, so generation, LoRA and MATS are written once.

A model takes token ids or ready-made embeddings (MATS splices 40 audio embeddings into the
prompt), an optional KV cache with a write index, a key mask for left padding, and positions.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.models.layers import KVCache


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Hugging Face's positions under left padding: cumsum(mask) - 1, pads at 0."""
    mask = attention_mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)


class DecoderLM(nnx.Module):
    """Base of `Llama` and `GPT2`. Subclasses define `embed`, `logits`, `_blocks` and cache
    shape.
    """

    layers: nnx.List

    def embed(self, tokens: jax.Array) -> jax.Array:
        raise NotImplementedError

    def logits(self, hidden: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _blocks(
        self,
        x: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache: KVCache | None,
        cache_index: jax.Array | int,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        raise NotImplementedError

    def cache_shape(self) -> tuple[int, int, int]:
        """(num_layers, kv_heads, head_dim)."""
        raise NotImplementedError

    def run_layers(
        self,
        x: jax.Array,
        cache: KVCache | None,
        apply: Callable[[nnx.Module, jax.Array, tuple | None], tuple[jax.Array, tuple | None]],
    ) -> tuple[jax.Array, KVCache | None]:
        """`x` through every layer in turn, each with its slice of the cache: the one layer loop
        of every LM; `apply(layer, x, (keys, values) or None)` -> (x, the layer's new cache)."""
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, layer_cache = apply(
                layer, x, None if cache is None else (cache.keys[i], cache.values[i])
            )
            if layer_cache is not None:
                keys.append(layer_cache[0])
                values.append(layer_cache[1])
        return x, (KVCache(tuple(keys), tuple(values)) if cache is not None else None)

    def init_cache(self, batch: int, max_length: int, dtype=None) -> KVCache:
        layers, kv_heads, head_dim = self.cache_shape()
        return KVCache.zeros(layers, batch, max_length, kv_heads, head_dim, dtype or self.dtype)

    def hidden_states(
        self,
        tokens: jax.Array | None = None,
        *,
        embeddings: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        cache_index: jax.Array | int = 0,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Final (normed) hidden states [B, T, D] and the updated cache.

        attention_mask: [B, S] real-token mask over the cache slots (S = cache length), or over
        this call's tokens without a cache. positions default to cache_index + arange(T).
        segment_ids: [B, T] for packed sequences (no cache): a token attends only to earlier
        tokens of its own nonzero segment (0 = padding); pass positions restarting at 0 in each
        segment so that each example is computed as if it were alone.
        """
        if segment_ids is not None and cache is not None:
            raise ValueError("segment_ids are for packed sequences without a cache")
        if (tokens is None) == (embeddings is None):
            raise ValueError("pass exactly one of tokens or embeddings")
        x = self.embed(tokens) if embeddings is None else embeddings.astype(self.dtype)
        batch, length = x.shape[:2]
        if attention_mask is None:
            width = cache.max_length if cache is not None else length
            attention_mask = jnp.ones((batch, width), jnp.bool_)
        if positions is None:
            positions = jnp.broadcast_to(cache_index + jnp.arange(length), (batch, length))
        return self._blocks(x, positions, attention_mask, cache, cache_index, segment_ids)

    def __call__(
        self, tokens: jax.Array | None = None, **kwargs
    ) -> tuple[jax.Array, KVCache | None]:
        """Logits [B, T, V] (float32) and the updated cache; arguments as `hidden_states`."""
        hidden, cache = self.hidden_states(tokens, **kwargs)
        return self.logits(hidden), cache
