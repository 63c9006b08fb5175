"""MATS as a run config describes it: concretely (the trainer, the listener) or with shapes only
(ahead-of-time compilation, importing trained weights), from the same code.

A config may declare its LLM's architecture (`llm.architecture`, an HF config dict) without the
weights: shapes, import and export need no more. Building the model concretely needs the
weights, and `build_mats` checks that `llm.checkpoint` holds that architecture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import transformers
from flax import nnx

from mats_jax.config import ConfigError, mats_config
from mats_jax.convert.llm import load_llm, read_source
from mats_jax.mats.model import MATS
from mats_jax.models import registry, store
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path


def llm_source(config: ml_collections.ConfigDict) -> str | Path:
    """The LLM a run uses: `llm.checkpoint`, else the embedded SmolLM2."""
    return config.llm.checkpoint or smollm2_gguf_path()


def use_key_type(config: ml_collections.ConfigDict) -> None:
    """The PRNG key type of the run (its checkpoints hold such keys): trainer, listener and
    importer alike."""
    jax.config.update("jax_default_prng_impl", config.train.prng_impl)


def build_mats(
    config: ml_collections.ConfigDict,
) -> tuple[MATS, transformers.PreTrainedTokenizerBase]:
    """(MATS model, LLM tokenizer): the frozen LLM with LoRA and a fresh mapper and projector.

    A config that declares `llm.architecture` must give its weights in `llm.checkpoint`, of that
    architecture (`check_llm`); ConfigError otherwise."""
    use_key_type(config)
    check_llm(config)
    source = llm_source(config)
    llm = load_llm(
        source, dtype=jnp.dtype(config.llm.dtype), param_dtype=jnp.dtype(config.llm.param_dtype)
    )
    return MATS(llm, mats_config(config), rngs=nnx.Rngs(config.train.seed)), load_tokenizer(source)


# The Hugging Face config fields that decide the LLM's parameter shapes, compared by `check_llm`.
SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)
_GPT2_NAMES = {
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "intermediate_size": "n_inner",
}


def _shape_field(hf_config: dict[str, Any], field: str) -> Any:
    """`field` of an HF config, under GPT-2's name where it has one; an absent
    num_key_value_heads is num_attention_heads (as in transformers)."""
    value = hf_config.get(field, hf_config.get(_GPT2_NAMES.get(field, "")))
    if value is None and field == "num_key_value_heads":
        return _shape_field(hf_config, "num_attention_heads")
    return value


def check_llm(config: ml_collections.ConfigDict) -> None:
    """ConfigError (one line) unless the LLM the run would load is the one `llm.architecture`
    declares: with an architecture, `llm.checkpoint` must be given (the embedded SmolLM2 is not
    a stand-in), and its family and shape fields (`SHAPE_FIELDS`) must equal the declared ones.
    Reads only the checkpoint's metadata (a GGUF file is read whole). No architecture: no check.
    """
    if not config.llm.architecture:
        return
    declared = config.llm.architecture.to_dict()
    want = registry.of_hf_config(declared, "llm.architecture").name
    checkpoint = config.llm.checkpoint
    if not checkpoint:
        shape = ", ".join(f"{f} {_shape_field(declared, f)}" for f in SHAPE_FIELDS[:4])
        raise ConfigError(
            f"the config names an LLM that is not here (llm.architecture: {want}, {shape}) and "
            "llm.checkpoint is empty: set --config.llm.checkpoint to its converted folder "
            "(python -m mats_jax.convert llm)"
        )
    family, hf_config = llm_architecture(config)
    if family != want:
        raise ConfigError(
            f"llm.checkpoint {checkpoint} is a {family} LLM, but llm.architecture names a {want} "
            "one"
        )
    for field in SHAPE_FIELDS:
        found, expected = _shape_field(hf_config, field), _shape_field(declared, field)
        if found != expected:
            raise ConfigError(
                f"llm.checkpoint {checkpoint} has {field} {found}, but llm.architecture says "
                f"{expected}"
            )


def llm_architecture(config: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]]:
    """(family, Hugging Face config) of the run's LLM without its weights: a model folder's
    metadata, a Hugging Face folder's config.json, else `llm.architecture` when no checkpoint is
    given (configs/mats_llama.py names Vicuna-7B's), else the LLM file itself (a GGUF, or the
    embedded SmolLM2: small)."""
    checkpoint = config.llm.checkpoint
    if checkpoint and store.is_model_folder(checkpoint):
        return store.read_metadata(checkpoint)
    if checkpoint and (Path(checkpoint) / "config.json").is_file():
        hf_config = json.loads((Path(checkpoint) / "config.json").read_text())
        return registry.of_hf_config(hf_config, checkpoint).name, hf_config
    if not checkpoint and config.llm.architecture:
        hf_config = config.llm.architecture.to_dict()
        return registry.of_hf_config(hf_config, "llm.architecture").name, hf_config
    family, hf_config, _ = read_source(llm_source(config))
    return family, hf_config


def _random_mats(config: ml_collections.ConfigDict):
    """A function that builds MATS as `build_mats` does, with a randomly initialised LLM of the
    run's architecture (`llm_architecture`): only ever traced, never run eagerly."""
    family, hf_config = llm_architecture(config)
    llm = config.llm

    def build() -> MATS:
        model = registry.build_model(
            family, hf_config, dtype=jnp.dtype(llm.dtype), param_dtype=jnp.dtype(llm.param_dtype)
        )
        return MATS(model, mats_config(config), rngs=nnx.Rngs(config.train.seed))

    return build


def abstract_mats(config: ml_collections.ConfigDict) -> MATS:
    """MATS as `build_mats` makes it, with shapes and dtypes only (no weights read or made)."""
    use_key_type(config)
    return nnx.eval_shape(_random_mats(config))


def initial_rngs(config: ml_collections.ConfigDict) -> nnx.State:
    """The RNG state (dropout streams) of the model `build_mats` makes, as concrete arrays,
    without reading or making any weight: the build is compiled with only the RNG state as its
    output, so XLA drops every parameter's initialisation."""
    use_key_type(config)
    build = _random_mats(config)
    return jax.jit(lambda: nnx.state(build(), nnx.RngState))()
