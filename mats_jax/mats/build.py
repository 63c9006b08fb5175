"""MATS as a run config describes it: concretely (the trainer, the listener) or with shapes only
(ahead-of-time compilation, importing trained weights), from the same code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import transformers
from flax import nnx

from mats_jax.config import mats_config
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
    """(MATS model, LLM tokenizer): the frozen LLM with LoRA and a fresh mapper and projector."""
    use_key_type(config)
    source = llm_source(config)
    llm = load_llm(
        source, dtype=jnp.dtype(config.llm.dtype), param_dtype=jnp.dtype(config.llm.param_dtype)
    )
    return MATS(llm, mats_config(config), rngs=nnx.Rngs(config.train.seed)), load_tokenizer(source)


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


def abstract_mats(config: ml_collections.ConfigDict) -> MATS:
    """MATS as `build_mats` makes it, with shapes and dtypes only (no weights read or made)."""
    use_key_type(config)
    family, hf_config = llm_architecture(config)
    llm = config.llm

    def build():
        model = registry.build_model(
            family, hf_config, dtype=jnp.dtype(llm.dtype), param_dtype=jnp.dtype(llm.param_dtype)
        )
        return MATS(model, mats_config(config), rngs=nnx.Rngs(config.train.seed))

    return nnx.eval_shape(build)
