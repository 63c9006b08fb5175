"""Flat views of a model's parameters: {"layers.0.self_attn.q_proj.kernel": array, ...}.

Converters and checkpoints speak in these dotted paths; `check_arrays` is the one place that
checks a set of arrays against a model (every key present, none extra, shapes equal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.runtime.fileio import ModelFileError

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


def check_arrays(
    expected: Mapping[str, tuple[int, ...]],
    arrays: Mapping[str, np.ndarray],
    source: str,
    display: Callable[[str], str] = str,
) -> None:
    """The one check of a set of arrays against what a model holds: every key present, none
    extra, shapes equal. Raises ModelFileError naming the first offending key as `display`
    shows it (e.g. by its PyTorch name)."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ModelFileError(
            f"{source}: missing key {display(missing[0])!r} ({len(missing)} missing)"
        )
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise ModelFileError(
            f"{source}: unexpected key {display(unexpected[0])!r} ({len(unexpected)} unexpected)"
        )
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != tuple(shape):
            raise ModelFileError(
                f"{source}: {display(key)!r} has shape {tuple(arrays[key].shape)}, "
                f"the model expects {tuple(shape)}"
            )


def load_params(
    model: M, arrays: Mapping[str, np.ndarray], source: str = "checkpoint", kind=nnx.Param
) -> M:
    """Assigns `arrays` into `model` in place (cast to each variable's dtype) and returns it;
    `model` may be abstract (`nnx.eval_shape`), so loading never pays for a random
    initialisation. Keys and shapes must match exactly (`check_arrays`)."""
    variables = flat_params(model, kind)
    check_arrays({key: tuple(var.shape) for key, var in variables.items()}, arrays, source)
    for key, var in variables.items():
        var.set_value(jnp.asarray(arrays[key], dtype=var.dtype))
    return model
