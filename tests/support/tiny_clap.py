"""A tiny msclap-family CLAP (2-layer GPT-2 text tower, one-stage-per-level HTSAT) and its
converted folder: what tests that run the CLAP text tower in every step build in seconds."""

from pathlib import Path

from flax import nnx

from mats_jax.clap.htsat import HTSATConfig
from mats_jax.clap.model import CLAP, MSCLAP_2023, STATE_KINDS, ClapConfig
from mats_jax.models import store
from mats_jax.models.gpt2 import GPT2Config
from mats_jax.models.params import param_arrays

TINY_CLAP = ClapConfig(
    audio=HTSATConfig(embed_dim=8, depths=(1, 1), num_heads=(1, 2), num_classes=4),
    text=GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=80),
    projection_dim=24,
)


def tiny_clap(seed: int = 0) -> CLAP:
    return CLAP(TINY_CLAP, rngs=nnx.Rngs(seed))


def tiny_clap_folder(path: Path, seed: int = 0) -> Path:
    """A `convert clap`-style folder of `tiny_clap(seed)`; its embeddings are 24-d."""
    store.save_model(
        path, MSCLAP_2023, TINY_CLAP.to_dict(), param_arrays(tiny_clap(seed), STATE_KINDS)
    )
    return path
