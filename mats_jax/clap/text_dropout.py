"""msclap's text tower in train mode: the CLAP-side augmentation the original MATS trains with.

The original registers msclap's TextEncoder inside its model, so `model.train()` reaches it and
every step's caption embedding passes through the dropouts of transformers' GPT2Model (built from
the hub's `gpt2` config: embd_pdrop = attn_pdrop = resid_pdrop = 0.1) and of msclap's Projection
(0.5), before the noise is injected. `TrainModeText` runs the frozen weights the same way, with one
mask per site drawn from an explicit key, at the sites torch has them:

    ours                             msclap's TextEncoder           rate
    embedding_dropout                base.drop (wte + wpe)          0.1
    block_dropout[i].attention       base.h.i.attn.attn_dropout     0.1  (attention probabilities)
    block_dropout[i].attention_out   base.h.i.attn.resid_dropout    0.1  (after attn.c_proj)
    block_dropout[i].mlp_out         base.h.i.mlp.dropout           0.1  (after mlp.c_proj)
    projection.dropout               projection.drop                0.5  (the linear2 branch)

Without a key it is eval mode: `CLAP.embed_text`. Only the positions up to the longest pooled
token of a batch are computed (GPT-2 is causal and msclap pools one position per caption, so later
positions change nothing), at the first of a few static widths that holds them: one compiled
program, chosen per batch by `lax.switch`. Rows of pad ids alone (empty packed slots) embed to
zeros. The weights stay CLAP's (frozen, shared with the model given), and no RNG state is held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.clap.caption_tokens import msclap_tokenize
from mats_jax.clap.model import CLAP
from mats_jax.config import ConfigError

GPT2_DROPOUT = 0.1  # embd_pdrop, attn_pdrop and resid_pdrop of the hub's gpt2 config
WIDTHS = (16, 32, 48)  # positions the tower runs at (and the full text length): few compiles


class BlockDropout(nnx.Module):
    """The three dropout sites of one GPT-2 block."""

    def __init__(self, rate: float):
        self.attention = nnx.Dropout(rate)
        self.attention_out = nnx.Dropout(rate)
        self.mlp_out = nnx.Dropout(rate)


class TrainModeText(nnx.Module):
    """The text tower of a msclap CLAP as `model.train()` runs it (see the module docstring)."""

    def __init__(self, clap: CLAP, *, gpt2_dropout: float = GPT2_DROPOUT):
        if clap.laion:
            raise ConfigError(
                "clap.text_dropout: the LAION-CLAP text tower (RoBERTa) has no train mode here; "
                "use a msclap CLAP or --config.clap.text_dropout=false"
            )
        self.encoder = clap.text_encoder
        self.projection = clap.text_projection
        self.text_len, self.pad_token_id = clap.config.text_len, clap.config.pad_token_id
        self.embedding_dropout = nnx.Dropout(gpt2_dropout)
        self.block_dropout = nnx.List(
            [BlockDropout(gpt2_dropout) for _ in range(clap.config.text.n_layer)]
        )

    def tokenize(self, captions: Sequence[str]) -> np.ndarray:
        """Captions -> int32 ids [N, text_len], as msclap tokenises them (cut to fit)."""
        return msclap_tokenize(captions, length=self.text_len, truncate=True)[0]

    def __call__(self, token_ids: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """ids [..., L] (right-padded with the pad id) -> embeddings [..., dim], not normalised;
        train mode with a `dropout_key`, eval mode without."""
        lead, length = token_ids.shape[:-1], token_ids.shape[-1]
        ids = token_ids.reshape(-1, length)
        index = jnp.sum(ids != self.pad_token_id, axis=-1) - 1  # msclap's pooled position
        real = index >= 0
        index = jnp.maximum(index, 0)
        widths = tuple(w for w in WIDTHS if w < length) + (length,)
        needed = jnp.max(index) + 1
        branch = jnp.sum(jnp.asarray(widths) < needed)  # the first width that holds `needed`
        at_width = [
            lambda ids, index, w=w: self.embed_positions(ids[:, :w], index, dropout_key)
            for w in widths
        ]
        embeddings = jax.lax.switch(branch, at_width, ids, index)
        embeddings = jnp.where(real[:, None], embeddings, 0.0)
        return embeddings.reshape(*lead, embeddings.shape[-1])

    def embed_positions(
        self, ids: jax.Array, index: jax.Array, key: jax.Array | None = None
    ) -> jax.Array:
        """Embeddings [B, dim] of ids [B, T] (cut to a width), pooled at `index` [B]."""
        keys = [None] * 2 if key is None else list(jax.random.split(key, 2))
        hidden = self.hidden_states(ids, keys[0])
        pooled = jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
        return self.projection(pooled, dropout_key=keys[1])

    def hidden_states(self, ids: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """GPT2Model's last_hidden_state [B, T, D] for ids [B, T], with dropout given a key."""
        gpt2 = self.encoder
        batch, length = ids.shape
        sites = 1 + 3 * len(self.block_dropout)
        keys = iter([None] * sites if key is None else jax.random.split(key, sites))

        def drop(site: nnx.Dropout, x: jax.Array) -> jax.Array:
            k = next(keys)
            return site(x, deterministic=k is None, rngs=k)

        x = drop(self.embedding_dropout, gpt2.embed(ids) + gpt2.wpe(jnp.arange(length))[None])
        causal = jnp.tril(jnp.ones((length, length), bool))
        heads = gpt2.config.n_head
        for layer, site in zip(gpt2.layers, self.block_dropout):
            qkv = layer.attn.c_attn(layer.ln_1(x)).reshape(batch, length, 3 * heads, -1)
            q, k, v = jnp.split(qkv, 3, axis=2)
            scores = jnp.einsum("btnh,bsnh->bnts", q, k).astype(jnp.float32)
            scores = jnp.where(causal, scores / math.sqrt(q.shape[-1]), jnp.finfo(jnp.float32).min)
            probs = drop(site.attention, jax.nn.softmax(scores, axis=-1).astype(v.dtype))
            attended = jnp.einsum("bnts,bsnh->btnh", probs, v).reshape(batch, length, -1)
            x = x + drop(site.attention_out, layer.attn.c_proj(attended))
            x = x + drop(site.mlp_out, layer.mlp(layer.ln_2(x)))
        return gpt2.ln_f(x)
