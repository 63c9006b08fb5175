"""Building blocks shared by every transformer in the project.

Every parameter carries `logical_axes` metadata (e.g. ``("embed", "mlp")``);
`mats_jax.runtime.sharding` maps those names to mesh axes with one rules table, so no module knows
about meshes.

`Linear` owns its optional LoRA adapter (rather than being wrapped by one) so that the base
weight keeps the same path with and without LoRA: converters, checkpoints and sharding rules
never have to know whether adapters are attached.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any
Axes = tuple[str | None, ...]

default_init = nnx.initializers.normal(stddev=0.02)


def param(
    rngs: nnx.Rngs | None,
    init,
    shape: tuple[int, ...],
    dtype: Dtype,
    axes: Axes,
    kind: type[nnx.Variable] = nnx.Param,
) -> nnx.Variable:
    """A parameter of `shape` with its logical axis names attached."""
    assert len(axes) == len(shape), (axes, shape)
    key = rngs.params() if rngs is not None else jax.random.key(0)
    return kind(init(key, shape, dtype), logical_axes=axes)


class Linear(nnx.Module):
    """y = x @ kernel (+ bias), kernel stored [in, out]; optional LoRA:
    + dropout(x) @ A @ B * alpha/r.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        axes: tuple[str, str],
        use_bias: bool = False,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features, self.out_features, self.axes = in_features, out_features, axes
        self.dtype = dtype
        self.kernel = param(rngs, default_init, (in_features, out_features), param_dtype, axes)
        self.bias = nnx.data(
            param(rngs, nnx.initializers.zeros, (out_features,), param_dtype, axes[1:])
            if use_bias
            else None
        )
        self.lora_a: nnx.LoRAParam | None = nnx.data(None)  # data, not static: add_lora fills it
        self.lora_b: nnx.LoRAParam | None = nnx.data(None)

    def add_lora(self, rank: int, alpha: float, dropout: float, rngs: nnx.Rngs) -> None:
        """Attach a LoRA adapter initialised as peft does: A kaiming-uniform(a=√5), B zero."""
        # peft uses nn.init.kaiming_uniform_(a=sqrt(5)) on A [r, in]: bound = 1/sqrt(in).
        bound = 1.0 / math.sqrt(self.in_features)
        init_a = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
        self.lora_a = param(
            rngs, init_a, (self.in_features, rank), jnp.float32, (self.axes[0], None), nnx.LoRAParam
        )
        self.lora_b = param(
            rngs,
            nnx.initializers.zeros,
            (rank, self.out_features),
            jnp.float32,
            (None, self.axes[1]),
            nnx.LoRAParam,
        )
        self.lora_scale = alpha / rank
        self.lora_dropout = nnx.Dropout(dropout, rngs=rngs)

    def merge_lora(self) -> None:
        """Fold the adapter into the base kernel and remove it."""
        if self.lora_a is None:
            return
        delta = (self.lora_a[...] @ self.lora_b[...]) * self.lora_scale
        self.kernel[...] = (self.kernel[...].astype(jnp.float32) + delta).astype(self.kernel.dtype)
        self.lora_a = self.lora_b = None
        del self.lora_scale, self.lora_dropout

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = x @ self.kernel[...].astype(self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora_a is not None:
            lora = self.lora_dropout(x) @ self.lora_a[...].astype(self.dtype)
            y = y + (lora @ self.lora_b[...].astype(self.dtype)) * self.lora_scale
        return y


class Embed(nnx.Module):
    """Token (or position) embedding table [num, features]; `attend` gives tied output logits."""

    def __init__(
        self,
        num: int,
        features: int,
        *,
        axes: tuple[str, str],
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.embedding = param(rngs, default_init, (num, features), param_dtype, axes)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return x.astype(self.dtype) @ self.embedding[...].astype(self.dtype).T


class RMSNorm(nnx.Module):
    """LLaMA's RMSNorm: normalise in float32, cast back, then scale (HF's order of operations)."""

    def __init__(
        self,
        features: int,
        *,
        eps: float,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.eps, self.dtype = eps, dtype
        self.scale = param(rngs, nnx.initializers.ones, (features,), param_dtype, ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm with scale and bias, statistics in float32."""

    def __init__(
        self,
        features: int,
        *,
        eps: float = 1e-5,
        axis_name: str = "embed",
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.eps, self.dtype = eps, dtype
        self.scale = param(rngs, nnx.initializers.ones, (features,), param_dtype, (axis_name,))
        self.bias = param(rngs, nnx.initializers.zeros, (features,), param_dtype, (axis_name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


@flax.struct.dataclass
class KVCache:
    """Per-layer key/value buffers [batch, max_length, kv_heads, head_dim].

    Slots are absolute positions in the buffer; which slots hold real tokens is the caller's
    `attention_mask` (left padding leaves leading slots empty), so one write index serves the
    whole batch.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]

    @classmethod
    def zeros(
        cls,
        num_layers: int,
        batch: int,
        max_length: int,
        kv_heads: int,
        head_dim: int,
        dtype: Dtype,
    ) -> KVCache:
        shape = (batch, max_length, kv_heads, head_dim)
        return cls(
            tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
            tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
        )

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[1]

    def map(self, fn: Callable[[jax.Array], jax.Array]) -> KVCache:
        """`fn` applied to every buffer."""
        return KVCache(tuple(map(fn, self.keys)), tuple(map(fn, self.values)))


def take_beams(rows: jax.Array, parents: jax.Array) -> jax.Array:
    """Rows [batch·beams, ...] of the beams named by `parents` [batch, beams], each an index among
    its own batch element's beams (beam search keeps the surviving beams' rows). The gather runs
    along the beam axis only, so rows sharded over the batch stay where they are; global row
    indices would all-gather them on every decoding step."""
    batch, beams = parents.shape
    grouped = rows.reshape(batch, beams, *rows.shape[1:])
    index = parents.reshape(batch, beams, *(1,) * (rows.ndim - 1))
    return jnp.take_along_axis(grouped, index, axis=1).reshape(rows.shape)


def cudnn_attention_fits(
    dtype: Dtype, head_dim: int, query_length: int, key_length: int, backend: str | None = None
) -> bool:
    """Whether cuDNN's fused (flash) attention takes these shapes: a GPU, bf16/f16, a head dim
    that is a multiple of 8 up to 128 (every GPU generation; Hopper allows more), and even
    lengths (the mask travels as a bias, whose gradient kernels need them)."""
    return (
        (backend or jax.default_backend()) == "gpu"
        and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
        and head_dim % 8 == 0
        and head_dim <= 128
        and query_length % 2 == 0
        and key_length % 2 == 0
    )


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, implementation: str | None = None
) -> jax.Array:
    """Grouped-query attention. q [B,T,N,H], k/v [B,S,K,H] with N a multiple of K, mask [B,T,S].

    `implementation`: "einsum" (below: f32 scores and softmax, what CPU and TPU run), "cudnn" or
    "xla" (`jax.nn.dot_product_attention`'s fused cuDNN kernel, or its XLA reference), or None:
    cuDNN where `cudnn_attention_fits`, else einsum. A fully masked query row attends uniformly
    in every implementation.
    """
    if implementation is None:
        fits = cudnn_attention_fits(q.dtype, q.shape[-1], q.shape[1], k.shape[1])
        implementation = "cudnn" if fits else "einsum"
    if implementation != "einsum":
        # cuDNN's backward pass is wrong for a query that sees no key (measured on an H100: dq
        # ~50 where it is 0, and dk, dv of its row off by as much). Such a query gets every key
        # and a zero query instead: the same uniform attention, and the einsum's gradients (none
        # to q or k, uniform to v).
        sees_nothing = ~mask.any(-1)  # [B, T]
        q = jnp.where(sees_nothing[:, :, None, None], jnp.zeros_like(q), q)
        mask = mask | sees_nothing[:, :, None]
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask[:, None], implementation=implementation
        )
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, n // kv_heads, h)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k).astype(jnp.float32) / math.sqrt(h)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", probs, v).reshape(b, t, n, h)


def attend_with_cache(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array,
    cache: tuple[jax.Array, jax.Array] | None,
    cache_index: jax.Array | int,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Causal attention over this call's keys, written into `cache` at `cache_index` if given.

    key_mask [B, S] marks slots holding real tokens (S = cache length, or T without a cache).
    Query t sits in slot cache_index + t and sees slots up to its own.
    segment_ids [B, T] (packed sequences, no cache): a query also sees only keys of its own
    nonzero segment; segment 0 (padding) sees nothing.
    """
    t = q.shape[1]
    if segment_ids is not None and cache is not None:
        raise ValueError("segment_ids are for packed sequences without a cache")
    if cache is not None:
        k_cache, v_cache = cache
        k = jax.lax.dynamic_update_slice_in_dim(
            k_cache, k.astype(k_cache.dtype), cache_index, axis=1
        )
        v = jax.lax.dynamic_update_slice_in_dim(
            v_cache, v.astype(v_cache.dtype), cache_index, axis=1
        )
        cache = (k, v)
    query_slot = cache_index + jnp.arange(t)
    causal = jnp.arange(k.shape[1])[None, :] <= query_slot[:, None]
    mask = causal[None] & key_mask[:, None, :].astype(bool)
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = mask & same & (segment_ids != 0)[:, :, None]
    return attention(q, k.astype(q.dtype), v.astype(q.dtype), mask), cache


def per_clip(fn, x: jax.Array, chunk: int = 1) -> jax.Array:
    """fn over the leading (clip) axis in chunks of `chunk` clips, one chunk after another
    (`lax.map`), on the CPU backend; elsewhere (and for a single chunk) fn(x) directly.

    On CPU the early, high-resolution Swin stages run much faster clip by clip: their
    activations ([64, 64, 384] MLP hiddens, [64, 4, 64, 64] attention scores per clip) then stay
    in cache instead of streaming through memory for the whole batch between ops.
    """
    b = x.shape[0]
    if jax.default_backend() != "cpu" or b <= chunk or b % chunk:
        return fn(x)
    xs = x.reshape(b // chunk, chunk, *x.shape[1:])
    ys = jax.lax.map(fn, xs)
    return ys.reshape(b, *ys.shape[2:])


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """torch's F.normalize: x / max(‖x‖, eps), computed in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    return (x32 / jnp.maximum(jnp.linalg.norm(x32, axis=-1, keepdims=True), eps)).astype(x.dtype)
