"""Flat views of a model's parameters: {"layers.0.self_attn.q_proj.kernel": array, ...}.

Converters and checkpoints speak in these dotted paths; `load_params` is the one place that
checks a set of arrays against a model (every key present, none extra, shapes equal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

M = TypeVar("M", bound=nnx.Module)


def _path(keys) -> str:
    return ".".join(str(k) for k in keys)


def flat_params(model: nnx.Module, kind=nnx.Param) -> dict[str, nnx.Variable]:
    """Variables of `kind` (Param includes LoRAParam) by dotted path."""
    state = nnx.state(model, kind)
    return {_path(path): var for path, var in nnx.to_flat_state(state)}


def param_arrays(model: nnx.Module, kind=nnx.Param) -> dict[str, np.ndarray]:
    return {k: np.asarray(v[...]) for k, v in flat_params(model, kind).items()}


def create_jitted(factory: Callable[[], M]) -> M:
    """`factory()` with its random initialisation compiled as one XLA program.

    Eager initialisation dispatches (and on first use compiles) one small program per
    parameter: building a random CLAP that way takes most of a minute on two cores.
    """
    graphdef, _ = nnx.split(nnx.eval_shape(factory))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.split(factory())[1])())


def load_params(model: nnx.Module, arrays: Mapping[str, np.ndarray], source: str = "checkpoint",
                kind=nnx.Param) -> None:
    """Assign `arrays` into `model` in place (cast to each parameter's dtype); `model` may be
    abstract (`nnx.eval_shape`), so loading never pays for a random initialisation.

    Raises ValueError naming the first missing or unexpected key, or a shape mismatch.
    """
    params = flat_params(model, kind)
    missing = sorted(set(params) - set(arrays))
    unexpected = sorted(set(arrays) - set(params))
    if missing:
        raise ValueError(f"{source}: missing parameter {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise ValueError(f"{source}: unexpected parameter {unexpected[0]!r} ({len(unexpected)} unexpected)")
    for key, var in params.items():
        value = arrays[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, model expects {tuple(var.shape)}")
        var.set_value(jnp.asarray(value, dtype=var.dtype))
