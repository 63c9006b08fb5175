"""The paper's optimiser: AdamW with decay on ≥2-D weights only, linear warmup then cosine to 0."""

from __future__ import annotations

import jax
import optax


def learning_rate(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1), end_value=0.0
    )


def decay_mask(params):
    """Weight decay on matrices (and larger), not on biases, norms or other vectors."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def adamw(
    *,
    peak_lr: float,
    warmup_steps: int,
    total_steps: int,
    weight_decay: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    return optax.adamw(
        learning_rate(peak_lr, warmup_steps, total_steps),
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        mask=decay_mask,
    )


def from_config(train) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(AdamW, its learning-rate schedule) of a config's `train` block."""
    schedule = learning_rate(train.lr, train.warmup_steps, train.steps)
    tx = adamw(
        peak_lr=train.lr,
        warmup_steps=train.warmup_steps,
        total_steps=train.steps,
        weight_decay=train.weight_decay,
        b1=train.b1,
        b2=train.b2,
    )
    return tx, schedule
