"""HTSAT (Swin-tiny over a log-mel "image"): the audio tower of CLAP.

Input is a log-mel spectrogram [B, frames, mel_bins] (frames ≤ spec_size · freq_ratio), or
[B, channels, frames, mel_bins]; the front end that makes it lives elsewhere
(`mats_jax.clap.msclap_features` for msclap; `mats_jax.clap.laion_features` for LAION-CLAP), so
this module serves both CLAP families. Steps:

1. `bn0`: eval-mode BatchNorm over the mel bins (running statistics are `nnx.BatchStat`).
2. Bicubic resize of the time axis to spec_size · freq_ratio (1024) with torch's kernel
   (A = -0.75, align_corners=True, clamped taps, source coordinate in float32), as one fixed
   [1024, frames] matrix — `jax.image.resize` is a different kernel and is off by ~0.3.
3. Fold into a spec_size² image: time is cut into freq_ratio chunks that are stacked along the
   frequency axis (row = chunk · mel_bins + mel).
4. Patch embedding (4×4, stride 4, as a reshape + matmul), Swin stages with (shifted) window
   attention, PatchMerging between stages, final LayerNorm.
5. latent = mean of the final tokens; optional TSCAM head: AudioSet clipwise (and framewise)
   probabilities as msclap computes them.

LAION's fused models (`fusion=True`, transformers' `enable_fusion`) take four channels: a
global mel (the whole clip shrunk to 10 s) and three 10 s crops. The global channel goes through
the patch embedding as above; for clips flagged `is_longer`, the crops go through `mel_conv`
(kernel and stride 4×12, so each crop's 256 columns give 21 tokens; the three are laid side by
side and zero-padded to 64) and are merged into the global tokens by attentional feature fusion
(AFF: two 1×1-conv/BatchNorm/ReLU/1×1-conv/BatchNorm branches, one local and one on the
spatial mean, w = sigmoid(local + global), out = 2·x·w + 2·crops·(1 - w)), before the patch
LayerNorm. Other clips keep their global tokens.

Activations are kept as [B, H, W, C] grids; windows are formed with reshapes and transposes
(no gathers), and every window of every clip is attended in one batched einsum whose batch
dimensions (clip, window, head) lead. On CPU the first `PER_CLIP_STAGES` stages run clip by clip
(`per_clip`, a `lax.map`) so that their large activations stay in cache.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.config import dataclass_fields
from mats_jax.models.layers import LayerNorm, Linear, default_init, param, per_clip

Dtype = Any

# Swin stages run clip by clip on CPU (see `per_clip`); later stages are faster batched.
PER_CLIP_STAGES = 2


@dataclasses.dataclass(frozen=True)
class HTSATConfig:
    """HTSAT-tiny defaults (msclap 2023 and LAION-CLAP's `ClapAudioConfig`)."""

    mel_bins: int = 64
    spec_size: int = 256
    patch_size: int = 4
    in_channels: int = 1
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    tscam: bool = True  # the token-semantic head (AudioSet clipwise output); msclap has it
    num_classes: int = 527
    fusion: bool = False  # LAION's feature fusion (4-channel input, mel_conv + AFF block)
    fusion_reduction: int = 4  # AFF bottleneck: embed_dim // fusion_reduction channels

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins

    @property
    def target_frames(self) -> int:
        return self.spec_size * self.freq_ratio

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HTSATConfig:
        d = dataclass_fields(cls, d, "HTSAT")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@flax.struct.dataclass
class HTSATOutput:
    latent: jax.Array  # [B, num_features] mean of the final normed tokens
    last_hidden_state: jax.Array  # [B, H, W, num_features] final normed token grid
    clipwise_output: jax.Array | None  # [B, num_classes] sigmoid probabilities (tscam only)
    framewise_output: jax.Array | None  # [B, target_frames, num_classes] (tscam only)


# ---------------------------------------------------------------------------------------------
# Fixed (weight-free) tables, built in numpy once per shape.


def _cubic_weights(t: np.ndarray, a: np.float32) -> np.ndarray:
    """torch's get_cubic_upsample_coefficients, in float32: weights of taps -1, 0, +1, +2."""
    one, two = np.float32(1), np.float32(2)

    def near(x):  # |x| <= 1
        return ((a + two) * x - (a + np.float32(3))) * x * x + one

    def far(x):  # 1 < |x| < 2
        return ((a * x - np.float32(5) * a) * x + np.float32(8) * a) * x - np.float32(4) * a

    return np.stack([far(t + one), near(t), near(one - t), far(two - t)], axis=-1)


@functools.cache
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float32 matrix M with M @ x == torch bicubic(align_corners=True) of x.

    Mirrors ATen's CPU kernel: scale = (n_in-1)/(n_out-1) and the source coordinate scale·i in
    float32, index = floor (clamped to [0, n_in-1]), t clamped to [0, 1], cubic A = -0.75, and
    the four taps clamped to the edges (repeated edge samples add up).
    """
    if n_in == n_out:
        return np.eye(n_out, dtype=np.float32)
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    real = (scale * np.arange(n_out, dtype=np.float32)).astype(np.float32)
    index = np.clip(np.floor(real).astype(np.int64), 0, n_in - 1)
    t = np.clip(real - index.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    weights = _cubic_weights(t, np.float32(-0.75))
    matrix = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    for tap in range(4):
        cols = np.clip(index - 1 + tap, 0, n_in - 1)
        np.add.at(matrix, (rows, cols), weights[:, tap].astype(np.float64))
    return matrix.astype(np.float32)


@functools.cache
def relative_position_index(window: int) -> np.ndarray:
    """[window², window²] index into the (2w-1)² bias table (Swin's relative_position_index)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(
        2, -1
    )
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).astype(np.int32)


@functools.cache
def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """[num_windows, window², window²] additive mask (0 or -100) of shifted-window attention."""
    regions = np.zeros((height, width), np.float32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for h in cuts:
        for w in cuts:
            regions[h, w] = count
            count += 1
    windows = (
        regions.reshape(height // window, window, width // window, window)
        .transpose(0, 2, 1, 3)
        .reshape(-1, window * window)
    )
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


# ---------------------------------------------------------------------------------------------
# Layers.


class BatchNorm(nnx.Module):
    """Eval-mode BatchNorm over the last axis: (x - mean) / sqrt(var + eps) · scale + bias."""

    def __init__(
        self,
        features: int,
        *,
        eps: float,
        axis_name: str,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.eps = eps
        axes = (axis_name,)
        self.scale = param(rngs, nnx.initializers.ones, (features,), param_dtype, axes)
        self.bias = param(rngs, nnx.initializers.zeros, (features,), param_dtype, axes)
        self.mean = param(
            rngs, nnx.initializers.zeros, (features,), param_dtype, axes, nnx.BatchStat
        )
        self.var = param(rngs, nnx.initializers.ones, (features,), param_dtype, axes, nnx.BatchStat)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        inv = jax.lax.rsqrt(self.var[...].astype(jnp.float32) + self.eps) * self.scale[...]
        return ((x32 - self.mean[...]) * inv + self.bias[...]).astype(x.dtype)


def _strided_conv(image: jax.Array, kernel: jax.Array, bias: jax.Array, dtype) -> jax.Array:
    """Conv2d with stride = kernel size and no padding (trailing rows/columns that do not fill
    a patch are dropped, as torch does): image [B, H, W, C], kernel HWIO -> [B, H/kh, W/kw, O]."""
    kh, kw, c, _ = kernel.shape
    b, h, w, _ = image.shape
    gh, gw = h // kh, w // kw
    image = image[:, : gh * kh, : gw * kw]
    patches = (
        image.reshape(b, gh, kh, gw, kw, c)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(b, gh, gw, kh * kw * c)
    )
    return patches.astype(dtype) @ kernel.reshape(kh * kw * c, -1).astype(dtype) + bias.astype(
        dtype
    )


class FusionBranch(nnx.Module):
    """1×1 conv -> BatchNorm -> ReLU -> 1×1 conv -> BatchNorm (1×1 convs as [in, out] kernels)."""

    def __init__(
        self, channels: int, inner: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs
    ):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = Linear(channels, inner, axes=("embed", "fusion"), **kw)
        self.bn1 = BatchNorm(inner, eps=eps, axis_name="fusion", param_dtype=param_dtype, rngs=rngs)
        self.conv2 = Linear(inner, channels, axes=("fusion", "embed"), **kw)
        self.bn2 = BatchNorm(
            channels, eps=eps, axis_name="embed", param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x):
        return self.bn2(self.conv2(jax.nn.relu(self.bn1(self.conv1(x)))))


class AttentionalFusion(nnx.Module):
    """transformers' ClapAudioAFFBlock (2-D): w = sigmoid(local(x + r) + global(mean(x + r)));
    out = 2·x·w + 2·r·(1 - w). Tensors are [B, H, W, C]."""

    def __init__(
        self, channels: int, reduction: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs
    ):
        kw = dict(eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.local_att = FusionBranch(channels, channels // reduction, **kw)
        self.global_att = FusionBranch(channels, channels // reduction, **kw)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        a = x + residual
        pooled = jnp.mean(a.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(a.dtype)
        w = jax.nn.sigmoid(self.local_att(a) + self.global_att(pooled))
        return 2 * x * w + 2 * residual * (1 - w)


class PatchEmbed(nnx.Module):
    """Non-overlapping p×p patches -> embed_dim (torch Conv2d k=p, s=p), then LayerNorm.

    The kernel is stored HWIO [p, p, in, embed]; the conv is a reshape + one matmul. With
    `config.fusion`, also LAION's `mel_conv2d` (p × 3p, stride p × 3p) and the AFF block.
    """

    def __init__(self, config: HTSATConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        p, c, d = config.patch_size, config.in_channels, config.embed_dim
        self.patch, self.dtype = p, dtype
        axes = ("patch_height", "patch_width", "channels", "embed")
        self.kernel = param(rngs, default_init, (p, p, c, d), param_dtype, axes)
        self.bias = param(rngs, nnx.initializers.zeros, (d,), param_dtype, ("embed",))
        self.norm = LayerNorm(d, eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        if config.fusion:
            self.mel_kernel = param(rngs, default_init, (p, 3 * p, c, d), param_dtype, axes)
            self.mel_bias = param(rngs, nnx.initializers.zeros, (d,), param_dtype, ("embed",))
            self.fusion = AttentionalFusion(
                d,
                config.fusion_reduction,
                eps=config.batch_norm_eps,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

    def local_tokens(self, crops: jax.Array, width: int) -> jax.Array:
        """crops [B, n, H, W] -> [B, H/p, width, embed]: each crop through mel_conv, the n token
        grids side by side along time, zero-padded to `width`."""
        b, n, h, w = crops.shape
        y = _strided_conv(
            crops.reshape(b * n, h, w, 1), self.mel_kernel[...], self.mel_bias[...], self.dtype
        )
        _, gh, gw, d = y.shape
        y = y.reshape(b, n, gh, gw, d).transpose(0, 2, 1, 3, 4).reshape(b, gh, n * gw, d)
        return jnp.pad(y, ((0, 0), (0, 0), (0, width - n * gw), (0, 0)))

    def __call__(
        self, image: jax.Array, crops: jax.Array | None = None, is_longer: jax.Array | None = None
    ) -> jax.Array:
        """image [B, H, W, C] -> tokens [B, H/p, W/p, embed]; with fusion, `crops` [B, n, H, W]
        are fused into the rows where `is_longer` [B] is true."""
        x = _strided_conv(image, self.kernel[...], self.bias[...], self.dtype)
        if crops is not None:
            fused = self.fusion(x, self.local_tokens(crops, x.shape[2]))
            x = jnp.where(jnp.reshape(is_longer, (-1, 1, 1, 1)).astype(bool), fused, x)
        return self.norm(x)


class WindowAttention(nnx.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        *,
        qkv_bias: bool,
        dtype,
        param_dtype,
        rngs: nnx.Rngs,
    ):
        self.num_heads, self.window, self.dtype = num_heads, window, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = Linear(dim, 3 * dim, axes=("embed", "qkv"), use_bias=qkv_bias, **kw)
        self.proj = Linear(dim, dim, axes=("q_heads", "embed"), use_bias=True, **kw)
        self.relative_position_bias_table = param(
            rngs,
            default_init,
            ((2 * window - 1) ** 2, num_heads),
            param_dtype,
            ("relative_position", "heads"),
        )

    def bias(self) -> jax.Array:
        """[heads, N, N] relative position bias (a small gather from the table)."""
        n = self.window * self.window
        index = relative_position_index(self.window).reshape(-1)
        table = jnp.take(self.relative_position_bias_table[...], index, axis=0)
        return table.reshape(n, n, self.num_heads).transpose(2, 0, 1).astype(jnp.float32)

    def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
        """x [B, nW, N, C] (N tokens per window); mask [nW, N, N] additive, or None."""
        b, nw, n, c = x.shape
        h = self.num_heads
        head_dim = c // h
        # one transpose to [3, B, nW, heads, N, d]: the attention matmuls then have all batch
        # dimensions leading (one batched GEMM each, no transposes around them)
        qkv = self.qkv(x).reshape(b, nw, n, 3, h, head_dim).transpose(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * jnp.asarray(head_dim**-0.5, q.dtype)  # msclap scales q before q·k
        scores = jnp.einsum("bwhqd,bwhkd->bwhqk", q, k).astype(jnp.float32)
        scores = scores + self.bias()  # [heads, N, N]; broadcast adds fuse into the softmax
        if mask is not None:
            scores = scores + jnp.asarray(mask)[:, None]  # [nW, 1, N, N]
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bwhqk,bwhkd->bwhqd", probs, v)
        out = out.transpose(0, 1, 3, 2, 4).reshape(b, nw, n, c)
        return self.proj(out)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = Linear(dim, hidden, axes=("embed", "mlp"), **kw)
        self.fc2 = Linear(hidden, dim, axes=("mlp", "embed"), **kw)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))  # exact (erf) GELU


class SwinBlock(nnx.Module):
    """Pre-LN block: (shifted) window attention, then MLP; both residual.

    A stage whose grid is no larger than the window attends over the whole grid with no shift.
    """

    def __init__(
        self,
        config: HTSATConfig,
        dim: int,
        num_heads: int,
        resolution: int,
        shift: bool,
        *,
        dtype,
        param_dtype,
        rngs: nnx.Rngs,
    ):
        window = config.window_size
        if resolution <= window:
            window, shift = resolution, False
        self.window, self.shift = window, (window // 2 if shift else 0)
        ln = dict(eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = LayerNorm(dim, **ln)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias=config.qkv_bias, **kw)
        self.norm2 = LayerNorm(dim, **ln)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, C] -> same shape."""
        b, h, w, c = x.shape
        ws, s = self.window, self.shift
        y = self.norm1(x)
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))  # torch.roll semantics
        windows = (
            y.reshape(b, h // ws, ws, w // ws, ws, c)
            .transpose(0, 1, 3, 2, 4, 5)
            .reshape(b, (h // ws) * (w // ws), ws * ws, c)
        )
        mask = shifted_window_mask(h, w, ws, s) if s else None
        y = self.attn(windows, mask)
        y = (
            y.reshape(b, h // ws, w // ws, ws, ws, c)
            .transpose(0, 1, 3, 2, 4, 5)
            .reshape(b, h, w, c)
        )
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nnx.Module):
    """2×2 neighbours concatenated in the order (0,0), (1,0), (0,1), (1,1) -> LN ->
    Linear 4C->2C.
    """

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.norm = LayerNorm(
            4 * dim, eps=eps, axis_name="merged", dtype=dtype, param_dtype=param_dtype
        )
        self.reduction = Linear(
            4 * dim,
            2 * dim,
            axes=("merged", "embed"),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        # [b, h/2, dh, w/2, dw, c] -> [b, h/2, w/2, dw, dh, c]: the concat index is dw·2 + dh
        x = (
            x.reshape(b, h // 2, 2, w // 2, 2, c)
            .transpose(0, 1, 3, 4, 2, 5)
            .reshape(b, h // 2, w // 2, 4 * c)
        )
        return self.reduction(self.norm(x))


class SwinStage(nnx.Module):
    def __init__(self, config: HTSATConfig, index: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        dim = config.embed_dim * 2**index
        resolution = config.spec_size // config.patch_size // 2**index
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.blocks = nnx.List(
            [
                SwinBlock(config, dim, config.num_heads[index], resolution, shift=i % 2 == 1, **kw)
                for i in range(config.depths[index])
            ]
        )
        last = index == len(config.depths) - 1
        self.downsample = nnx.data(
            None if last else PatchMerging(dim, eps=config.layer_norm_eps, **kw)
        )

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TSCAMHead(nnx.Module):
    """Token-semantic head: Conv2d(C -> classes, kernel (F, 3), pad (0, 1)) over the re-grouped
    token grid, mean over time, sigmoid. Kernel stored HWIO; the conv is 3 shifted matmuls.
    """

    def __init__(self, config: HTSATConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        c, k = config.num_features, config.num_classes
        height = (
            config.spec_size
            // config.patch_size
            // 2 ** (len(config.depths) - 1)
            // config.freq_ratio
        )
        self.dtype = dtype
        self.kernel = param(
            rngs,
            default_init,
            (height, 3, c, k),
            param_dtype,
            ("conv_height", "conv_width", "embed", "classes"),
        )
        self.bias = param(rngs, nnx.initializers.zeros, (k,), param_dtype, ("classes",))

    def __call__(self, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
        """grid [B, F, T, C] -> (clipwise [B, classes], per-step sigmoid [B, T, classes])."""
        b, f, t, c = grid.shape
        padded = jnp.pad(grid.astype(self.dtype), ((0, 0), (0, 0), (1, 1), (0, 0)))
        taps = jnp.stack([padded[:, :, j : j + t] for j in range(3)], axis=2)  # [B, F, 3, T, C]
        taps = taps.transpose(0, 3, 1, 2, 4).reshape(b, t, f * 3 * c)
        logits = taps @ self.kernel[...].reshape(f * 3 * c, -1).astype(self.dtype) + self.bias[...]
        logits = logits.astype(jnp.float32)
        return jax.nn.sigmoid(jnp.mean(logits, axis=1)), jax.nn.sigmoid(logits)


class HTSAT(nnx.Module):
    """HTSAT Swin transformer on log-mel input [B, frames, mel_bins] (see the module docstring)."""

    def __init__(
        self,
        config: HTSATConfig = HTSATConfig(),
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if config.spec_size % config.mel_bins:
            raise ValueError("spec_size must be a multiple of mel_bins")
        self.config, self.dtype = config, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn0 = BatchNorm(
            config.mel_bins,
            eps=config.batch_norm_eps,
            axis_name="mel",
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.patch_embed = PatchEmbed(config, **kw)
        self.layers = nnx.List([SwinStage(config, i, **kw) for i in range(len(config.depths))])
        self.norm = LayerNorm(
            config.num_features, eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype
        )
        self.tscam = nnx.data(TSCAMHead(config, **kw) if config.tscam else None)

    def image(self, log_mel: jax.Array) -> jax.Array:
        """bn0, bicubic time resize and fold: [B, (channels,) frames, mel] -> [B, (channels,) spec,
        spec] (freq, time); every channel is folded alike."""
        c = self.config
        *lead, frames, mels = log_mel.shape
        if mels != c.mel_bins:
            raise ValueError(f"HTSAT expects {c.mel_bins} mel bins, got {mels}")
        if frames > c.target_frames:
            raise ValueError(
                f"HTSAT takes at most {c.target_frames} frames, got {frames} "
                "(msclap's multi-crop average for longer input is not implemented)"
            )
        x = self.bn0(log_mel.astype(jnp.float32))
        # resize and fold in one contraction:
        # image[b, r·mel + m, w] = Σ_t M[r·spec + w, t] x[b, t, m]
        m = jnp.asarray(
            bicubic_matrix(frames, c.target_frames).reshape(c.freq_ratio, c.spec_size, frames)
        )
        image = jnp.einsum("rwt,...tm->...rmw", m, x, precision=jax.lax.Precision.HIGHEST)
        return image.reshape(*lead, c.freq_ratio * c.mel_bins, c.spec_size)

    def head(self, tokens: jax.Array) -> HTSATOutput:
        """Last stage's tokens [B, H, W, C] -> final norm, latent and (TSCAM) AudioSet outputs."""
        c = self.config
        tokens = self.norm(tokens)
        latent = jnp.mean(tokens.astype(jnp.float32), axis=(1, 2))
        clipwise = framewise = None
        if self.tscam is not None:
            b, h, w, d = tokens.shape
            # undo the fold: grid row h = chunk · bins + bin -> [B, bins, chunk · W + w]
            bins = h // c.freq_ratio
            grid = (
                tokens.reshape(b, c.freq_ratio, bins, w, d)
                .transpose(0, 2, 1, 3, 4)
                .reshape(b, bins, c.freq_ratio * w, d)
            )
            clipwise, steps = self.tscam(grid)
            framewise = jnp.repeat(steps, c.target_frames // steps.shape[1], axis=1)
        return HTSATOutput(
            latent=latent,
            last_hidden_state=tokens,
            clipwise_output=clipwise,
            framewise_output=framewise,
        )

    def __call__(self, log_mel: jax.Array, is_longer: jax.Array | None = None) -> HTSATOutput:
        """[B, frames, mel_bins] or [B, channels, frames, mel_bins] log-mel (dB) -> HTSATOutput.

        With `config.fusion`, channel 0 is the global mel and channels 1: the crops, which are
        fused for the clips where `is_longer` [B] (or [B, 1]) is true; None: no clip is.
        """
        c = self.config
        image = self.image(log_mel)
        if image.ndim == 3:
            image = image[:, None]
        if c.fusion:
            if is_longer is not None and image.shape[1] < 2:
                raise ValueError(
                    "fusion with is_longer needs the crops: input [B, 4, frames, mels]"
                )
            crops = image[:, 1:] if is_longer is not None else None
            x = self.patch_embed(image[:, : c.in_channels].transpose(0, 2, 3, 1), crops, is_longer)
        else:
            if image.shape[1] != c.in_channels:
                raise ValueError(
                    f"HTSAT takes {c.in_channels} input channel(s), got {image.shape[1]} "
                    "(4-channel 'fusion' features need a fused model)"
                )
            x = self.patch_embed(image.transpose(0, 2, 3, 1))
        early = self.layers[:PER_CLIP_STAGES]

        def run_early(x):
            for stage in early:
                x = stage(x)
            return x

        x = per_clip(run_early, x)
        for stage in self.layers[PER_CLIP_STAGES:]:
            x = stage(x)
        return self.head(x)
