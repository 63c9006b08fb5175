"""Training losses shared by the LM benchmarks and the MATS trainer.

`next_token_loss` is the one cross-entropy of the project: the LoRA step in
`benchmarks/lm_forward.py` and the MATS trainer (caption tokens only, prompt and audio positions
masked out) both call it, so the numbers they report mean the same thing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def next_token_loss(
    logits: jax.Array, targets: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy over masked tokens, number of masked tokens), both float32.

    logits [B, T, V] already aligned with targets [B, T] (shift before calling: position t
    predicts targets[:, t]); mask [B, T] is 1/True where a token counts. This is PyTorch's
    `cross_entropy(..., ignore_index=-100)` with the ignored targets given by `mask` instead.

    Why it looks like this:
    - Computed in float32 whatever the logits dtype (bf16 log-softmax over a 49k-151k vocab
      loses the small probabilities the gradient is made of).
    - `optax.softmax_cross_entropy_with_integer_labels` takes the log-sum-exp without
      materialising a one-hot [B, T, V] array.
    - Masked targets may hold anything (e.g. -100 or pad ids): they are replaced by 0 before the
      lookup, and their loss is zeroed, so they contribute neither value nor gradient.
    - The count is returned so a trainer can weight micro-batches by tokens (gradient
      accumulation, data-parallel means) instead of averaging averages.
    - An all-masked batch gives loss 0 (not NaN): the denominator is max(count, 1).
    - Prefer `targets = roll(tokens, -1)` with the last position masked over slicing
      `logits[:, :-1]`: the slice copies the whole [B, T, V] logits, the mask costs nothing.
    """
    mask = mask.astype(jnp.float32)
    safe_targets = jnp.where(mask > 0, targets, 0).astype(jnp.int32)
    per_token = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_targets
    )
    count = jnp.sum(mask)
    loss = jnp.sum(per_token * mask) / jnp.maximum(count, 1.0)
    return loss, count
