"""A ready CLAP: from a converted checkpoint folder, or with random weights and a loud warning.

Nothing here reads a foreign format (that is `mats_jax.convert.clap`); a folder written by
`python -m mats_jax.convert clap` holds our own parameter names, checked key by key and shape by
shape before anything is allocated.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.clap.caption_tokens import msclap_tokenize
from mats_jax.clap.model import CLAP, FAMILIES, STATE_KINDS, ClapConfig, embed_text_fn
from mats_jax.models import store
from mats_jax.models.params import create_jitted, load_params
from mats_jax.runtime.fileio import ModelFileError

RANDOM_CLAP_WARNING = """
=====================================================================================
 WARNING: no CLAP checkpoint given (config.clap.checkpoint): CLAP weights are RANDOM.
 The text embeddings MATS trains on carry no audio-text meaning; the run exercises the
 whole pipeline but the model will not listen. Convert real weights with
   python -m mats_jax.convert clap --from msclap --source CLAP_weights_2023.pth --out DIR
 and pass --config.clap.checkpoint=DIR.
=====================================================================================
"""


def abstract_clap(config: ClapConfig, **dtypes) -> CLAP:
    """A CLAP with shapes only (no memory, no random init)."""
    return nnx.eval_shape(lambda: CLAP(config, rngs=nnx.Rngs(0), **dtypes))


def build_clap(
    config: ClapConfig,
    params: Mapping[str, np.ndarray],
    *,
    source: str,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
) -> CLAP:
    """A CLAP holding `params` (keys and shapes checked first); nothing is randomly initialised."""
    return load_params(
        abstract_clap(config, dtype=dtype, param_dtype=param_dtype), params, source, STATE_KINDS
    )


def load_clap(path: str | Path, *, dtype=jnp.float32, param_dtype=jnp.float32) -> CLAP:
    """A ready CLAP from a mats_jax checkpoint folder (`python -m mats_jax.convert clap`)."""
    family, config, params = store.load_model(path)
    if family not in FAMILIES:
        raise ModelFileError(
            f"{path}: holds a {family!r} model, not a CLAP ({', '.join(FAMILIES)})"
        )
    try:
        clap_config = ClapConfig.from_dict(config)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: bad CLAP config ({e})") from None
    return build_clap(clap_config, params, source=str(path), dtype=dtype, param_dtype=param_dtype)


def load_clap_or_random(checkpoint: str | Path | None, *, seed: int = 0) -> CLAP:
    """The converted CLAP at `checkpoint`, or msclap 2023 with random weights and a loud warning."""
    if checkpoint:
        return load_clap(checkpoint)
    print(RANDOM_CLAP_WARNING, file=sys.stderr)
    logging.warning("CLAP weights are random (seed %d)", seed)
    return create_jitted(lambda: CLAP(ClapConfig(), rngs=nnx.Rngs(seed)))


def cache_name(checkpoint: str, seed: int) -> str:
    """Names the CLAP weights, so that embeddings from other weights are never reused."""
    if checkpoint:
        meta = Path(checkpoint) / store.METADATA_FILE
        content = meta.read_bytes() if meta.is_file() else str(checkpoint).encode()
        return f"{Path(checkpoint).name}-{hashlib.sha256(content).hexdigest()[:10]}"
    return f"random-seed{seed}"


EmbedFn = Callable[[np.ndarray], jax.Array]
Tokenize = Callable[[list[str]], np.ndarray]


def text_encoder(clap: CLAP) -> tuple[EmbedFn, Tokenize]:
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
