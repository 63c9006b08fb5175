"""MATS: mapper + projector in front of a frozen LLM with LoRA, trained from CLAP text embeddings.

The CLAP model is not part of this module: training reads cached CLAP *text* embeddings and
inference computes CLAP *audio* embeddings (with Santa) outside, so this module sees only
1024-d vectors. Trainable = `TRAINABLE` (mapper, projector, LoRA adapters); everything else in
the LLM is frozen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mats_jax.config import MATSConfig
from mats_jax.mats.mapper import Projector, build_mapper
from mats_jax.mats.prompt import InferenceBatch, PackedBatch, TrainingBatch
from mats_jax.models.decoder import DecoderLM
from mats_jax.models.layers import l2_normalize
from mats_jax.models.lora import add_lora
from mats_jax.models.losses import next_token_loss

TRAINABLE = nnx.Any(
    nnx.LoRAParam,
    nnx.All(nnx.Param, nnx.PathContains("mapper")),
    nnx.All(nnx.Param, nnx.PathContains("projector")),
)


def perturb(embedding: jax.Array, variance: float, noise: jax.Array) -> jax.Array:
    """normalise, add √variance·noise (noise ~ N(0, I)), normalise again: the paper's bridge over
    the gap between CLAP's text and audio regions (training, and Santa's retrieved texts)."""
    x = l2_normalize(embedding.astype(jnp.float32))
    return l2_normalize(x + jnp.sqrt(variance) * noise)


def inject_noise(embedding: jax.Array, variance: float, key: jax.Array) -> jax.Array:
    return perturb(embedding, variance, jax.random.normal(key, embedding.shape))


class MATS(nnx.Module):
    def __init__(self, llm: DecoderLM, config: MATSConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.llm = llm
        add_lora(
            llm,
            targets=config.lora.targets,
            rank=config.lora.rank,
            alpha=config.lora.alpha,
            dropout=config.lora.dropout,
            rngs=rngs,
        )
        self.mapper = build_mapper(config.mapper, rngs=rngs)
        self.projector = Projector(config.mapper.dim, llm.config.hidden_size, rngs=rngs)

    def prefix(self, clap_embedding: jax.Array) -> jax.Array:
        """[B, clap_dim] -> LLM input embeddings [B, prefix_length, hidden]."""
        return self.projector(self.mapper(clap_embedding)).astype(self.llm.dtype)

    def sequence(self, prefix: jax.Array, head: jax.Array, tail: jax.Array) -> jax.Array:
        """[head][prefix][tail] as embeddings; head [H] is shared by the batch."""
        batch = prefix.shape[0]
        head = jnp.broadcast_to(
            self.llm.embed(head)[None], (batch, head.shape[0], prefix.shape[-1])
        )
        return jnp.concatenate([head, prefix, self.llm.embed(tail)], axis=1)

    def loss(
        self, clap_embedding: jax.Array, batch: TrainingBatch, noise_key: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        """Next-token loss on answer + EOS; noise is injected when a key is given (training)."""
        if noise_key is not None:
            clap_embedding = inject_noise(clap_embedding, self.config.noise_variance, noise_key)
        prefix = self.prefix(clap_embedding)
        sequence = self.sequence(prefix, batch.head, batch.tail)
        start = batch.head.shape[0] + prefix.shape[1]
        mask = jnp.concatenate([jnp.ones((prefix.shape[0], start), bool), batch.tail_mask], axis=1)
        hidden, _ = self.llm.hidden_states(embeddings=sequence, attention_mask=mask)
        # position t predicts token t+1: the tail is predicted from one position earlier
        logits = self.llm.logits(hidden[:, start - 1 : -1])
        return next_token_loss(logits, batch.tail, batch.loss_mask)

    def packed_hidden_states(
        self, clap_embedding: jax.Array, batch: PackedBatch, noise_key: jax.Array | None
    ) -> jax.Array:
        """Final hidden states [R, T, D] of packed rows (`PromptBuilder.packed_batch`, fields as
        jax arrays): each example computed as if alone (segment mask, positions from 0).

        clap_embedding [R, M, clap_dim] follows `batch.examples`; empty slots (zeros, or
        anything) are replaced by zeros, mapped like any row and never gathered, so they give
        neither NaN nor gradient. Noise is injected per example embedding when a key is given.
        """
        rows, slots, clap_dim = clap_embedding.shape
        in_use = batch.examples.astype(bool).reshape(rows * slots, 1)
        clap = jnp.where(in_use, clap_embedding.reshape(rows * slots, clap_dim), 0.0)
        if noise_key is not None:
            clap = inject_noise(clap, self.config.noise_variance, noise_key)
        prefix = self.prefix(clap)  # [R*M, P, D]
        prefix = prefix.reshape(rows, slots * prefix.shape[1], prefix.shape[-1])
        slot = batch.prefix_slot
        # gather along each row's own slots (rows stay where a batch sharding puts them)
        gathered = jnp.take_along_axis(prefix, jnp.maximum(slot, 0)[..., None], axis=1)
        x = jnp.where((slot >= 0)[..., None], gathered, self.llm.embed(batch.tokens))
        hidden, _ = self.llm.hidden_states(
            embeddings=x,
            attention_mask=batch.segments != 0,
            positions=batch.positions,
            segment_ids=batch.segments,
        )
        return hidden

    def packed_loss(
        self, clap_embedding: jax.Array, batch: PackedBatch, noise_key: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        """`loss` for packed rows: the same token-weighted next-token loss on answer + EOS as
        the examples give unpacked; arguments as `packed_hidden_states`."""
        hidden = self.packed_hidden_states(clap_embedding, batch, noise_key)
        # the LM head only where it is scored: position t predicts token t + 1 of its own
        # example (a target's previous position is always in its example, its prompt or prefix)
        scored = batch.predictors >= 0
        at = jnp.maximum(batch.predictors, 0)
        hidden = jnp.take_along_axis(hidden, at[..., None], axis=1)  # [R, K, D]
        targets = jnp.take_along_axis(batch.tokens, at + 1, axis=1)
        return next_token_loss(self.llm.logits(hidden), targets, scored)

    def prompt_embeddings(
        self, clap_embedding: jax.Array, batch: InferenceBatch
    ) -> tuple[jax.Array, jax.Array]:
        """(embeddings, attention mask) of a generation prompt; pads sit inside the tail, and
        positions follow the mask, so the LLM sees each row as if it were left-padded."""
        prefix = self.prefix(clap_embedding)
        sequence = self.sequence(prefix, jnp.asarray(batch.head), jnp.asarray(batch.tail))
        start = batch.head.shape[0] + prefix.shape[1]
        mask = jnp.concatenate(
            [jnp.ones((prefix.shape[0], start), bool), jnp.asarray(batch.tail_mask)], axis=1
        )
        return sequence, mask
