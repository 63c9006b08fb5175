"""Building what the trainer needs from a config: the MATS model, the CLAP text encoder, the corpus.

Kept apart from `train.py` so that the trainer reads as a sequence of steps, and so that the
memory-bank, generation and evaluation entry points build the same things the same way.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mats_jax import distributed
from mats_jax.clap_tokenizers import msclap_tokenize
from mats_jax.convert.clap import load_clap
from mats_jax.convert.llm import load_llm
from mats_jax.data import prepare
from mats_jax.embedded import smollm2_gguf_path
from mats_jax.models.clap import CLAP, ClapConfig, embed_text_fn
from mats_jax.models.mapper import MapperConfig
from mats_jax.models.mats import MATS, LoraConfig, MATSConfig
from mats_jax.state import create_jitted
from mats_jax.tokenizer import load_tokenizer

RANDOM_CLAP_WARNING = """
=====================================================================================
 WARNING: no CLAP checkpoint given (config.clap.checkpoint): CLAP weights are RANDOM.
 The text embeddings MATS trains on carry no audio-text meaning; the run exercises the
 whole pipeline but the model will not listen. Convert real weights with
   python -m mats_jax.convert clap --from msclap --source CLAP_weights_2023.pth --out DIR
 and pass --config.clap.checkpoint=DIR.
=====================================================================================
"""


def build_mats(config: ml_collections.ConfigDict):
    """(MATS model, LLM tokenizer): the frozen LLM with LoRA and a fresh mapper and projector."""
    # the key type of the run (its checkpoints hold such keys): trainer, listener, importer alike
    jax.config.update("jax_default_prng_impl", config.train.get("prng_impl", "threefry2x32"))
    source = config.llm.checkpoint or smollm2_gguf_path()
    llm = load_llm(source, dtype=jnp.dtype(config.llm.dtype), param_dtype=jnp.dtype(config.llm.param_dtype))
    mats = MATS(llm, mats_config(config), rngs=nnx.Rngs(config.train.seed))
    return mats, load_tokenizer(source)


def mats_config(config: ml_collections.ConfigDict) -> MATSConfig:
    """The mapper, LoRA and noise settings of a run config (shared with `mats_jax.aot`, which
    builds the same model abstractly)."""
    m = config.mapper
    mapper = MapperConfig(mapping_type=m.mapping_type, clap_dim=config.clap.dim, dim=m.dim,
                          prefix_length=m.prefix_length, clip_length=m.clip_length,
                          num_layers=m.num_layers, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio)
    lora = LoraConfig(rank=config.lora.rank, alpha=config.lora.alpha, dropout=config.lora.dropout,
                      targets=tuple(config.lora.targets))
    return MATSConfig(mapper=mapper, lora=lora, noise_variance=config.noise_variance)


def load_clap_or_random(checkpoint: str | Path | None, *, seed: int = 0) -> CLAP:
    """The converted CLAP at `checkpoint`, or msclap-2023 with random weights and a loud warning."""
    if checkpoint:
        return load_clap(checkpoint)
    print(RANDOM_CLAP_WARNING, file=sys.stderr)
    logging.warning("CLAP weights are random (seed %d)", seed)
    return create_jitted(lambda: CLAP(ClapConfig(), rngs=nnx.Rngs(seed)))


def clap_cache_name(config: ml_collections.ConfigDict) -> str:
    """Names the CLAP weights, so that embeddings from other weights are never reused."""
    if config.checkpoint:
        return f"{Path(config.checkpoint).name}-{_digest(Path(config.checkpoint))}"
    return f"random-seed{config.seed}"


def clap_text_encoder(config: ml_collections.ConfigDict):
    """`text_encoder` of the config's CLAP (loaded, or random with a warning)."""
    return text_encoder(load_clap_or_random(config.checkpoint, seed=config.seed))


def text_encoder(clap: CLAP):
    """(embed: ids -> [B, dim], tokenize: texts -> ids [B, width]) of a CLAP's text tower.

    `tokenize` trims the right padding to the longest text of the batch (rounded up to 32):
    with causal attention and right padding the pooled state never sees the pads, so the
    embedding is exactly the 77-token one at a fraction of the cost.
    """
    embed = embed_text_fn(clap)

    def tokenize(texts: list[str]) -> np.ndarray:
        ids, mask = msclap_tokenize(texts, truncate=True)
        width = min(ids.shape[1], -(-int(mask.sum(1).max()) // 32) * 32)
        return ids[:, :width]

    return embed, tokenize


def _digest(folder: Path) -> str:
    """A short fingerprint of a checkpoint folder's metadata, so a new checkpoint gets a new cache."""
    meta = folder / "mats_jax.json"
    return hashlib.sha256(meta.read_bytes() if meta.is_file() else str(folder).encode()).hexdigest()[:10]


def prepare_corpus(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """The prepared corpus folder: `data.corpus` if given, else the shipped corpus, prepared once
    into the workdir. Its CLAP text embeddings are cached beside it (`clap_text_embeddings/`)."""
    if config.corpus:
        return Path(config.corpus)
    out = workdir / "corpus"
    with distributed.process_zero_first("corpus"):  # one writer; the others wait to see its work
        if not distributed.is_process_zero():
            distributed.wait_for_file(out / "manifest.json")
        elif not (out / "manifest.json").is_file():
            prepare.prepare(out, prepare.default_corpus_inputs(), overwrite=True)
    return out
