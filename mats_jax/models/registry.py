"""Model families by name: the one place that says which config and module a family string means.

The name is what a model folder's `mats_jax.json` carries ("family", and a CLAP config's own
`family` field inside it), spelled the same everywhere: "llama" and "gpt2" for decoder LMs
(registered here), and "clap-msclap-2023" and "clap-laion" for CLAP (registered by
`mats_jax.clap.model`). Converters keep their PyTorch key maps under the same names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from mats_jax.models.decoder import DecoderLM
from mats_jax.models.gpt2 import GPT2, GPT2Config
from mats_jax.models.llama import Llama, LlamaConfig
from mats_jax.runtime.fileio import ModelFileError


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    config: type  # a frozen dataclass with from_dict (and, for LMs, from_hf)
    model: type  # built as model(config, *, rngs, dtype=, param_dtype=)
    hf_model_types: tuple[str, ...] = ()  # transformers `model_type` values read as this family


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if _FAMILIES.get(family.name, family) != family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def get(name: str, source: str = "model") -> Family:
    """The family called `name`; ModelFileError naming `source` if there is none."""
    if name not in _FAMILIES:
        raise ModelFileError(
            f"{source}: model family {name!r} is not one of {', '.join(sorted(_FAMILIES))}"
        )
    return _FAMILIES[name]


def of_hf_config(hf_config: dict[str, Any], source: str) -> Family:
    """The family of a Hugging Face config dict, by its `model_type`."""
    model_type = hf_config.get("model_type")
    for family in _FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    readable = sorted(t for f in _FAMILIES.values() for t in f.hf_model_types)
    raise ModelFileError(
        f"{source}: model_type {model_type!r} is not supported ({', '.join(readable)})"
    )


LLAMA = register(Family("llama", LlamaConfig, Llama, hf_model_types=("llama", "mistral")))
GPT2_FAMILY = register(Family("gpt2", GPT2Config, GPT2, hf_model_types=("gpt2",)))


def build_model(
    name: str,
    hf_config: dict[str, Any],
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    seed: int = 0,
) -> DecoderLM:
    """A randomly initialised decoder LM of family `name` for a Hugging Face config dict (under
    `nnx.eval_shape`, shapes only)."""
    family = get(name)
    return family.model(
        family.config.from_hf(hf_config), dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed)
    )
