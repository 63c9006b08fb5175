"""LoRA on chosen projections of any model built from `layers.Linear`.

Adapters live inside the `Linear` they adapt (see layers.py), as `nnx.LoRAParam` variables, so
"trainable" is the filter `nnx.LoRAParam` (plus whatever else a trainer adds, e.g. the MATS
mapper) and everything else is frozen.
"""

from __future__ import annotations

from collections.abc import Iterable

from flax import nnx

from mats_jax.models.layers import Linear


def lora_targets(model: nnx.Module, names: Iterable[str]) -> list[tuple[str, Linear]]:
    """(path, module) of every Linear whose attribute name is in `names` (e.g. q_proj, v_proj)."""
    names = set(names)
    found = [
        (".".join(map(str, path)), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, Linear) and path and path[-1] in names
    ]
    if not found:
        raise ValueError(f"no Linear layer named any of {sorted(names)} in {type(model).__name__}")
    return found


def add_lora(
    model: nnx.Module,
    *,
    targets: Iterable[str] = ("q_proj", "v_proj"),
    rank: int = 8,
    alpha: float = 32.0,
    dropout: float = 0.1,
    rngs: nnx.Rngs,
) -> None:
    """Attach adapters in place: B starts at zero, so the model's output is unchanged."""
    for _, linear in lora_targets(model, targets):
        linear.add_lora(rank, alpha, dropout, rngs)


def merge_lora(model: nnx.Module) -> None:
    """Fold every adapter into its base kernel (for export or faster inference)."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Linear):
            module.merge_lora()
