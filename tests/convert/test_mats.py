"""The original MATS checkpoint's key map: the buffers the original code saves beside the trained
parameters are recognised by name and skipped; any other unknown key is an error naming it."""

import numpy as np
import pytest

from mats_jax.convert.mats import mats_keymap
from mats_jax.runtime.fileio import ModelFileError
from tests.references.mats_original import (
    legacy_gpt2_buffers,
    msclap_audio_buffers,
    rotary_buffers,
)

HTSAT = "audio_encoder.base.htsat."


@pytest.fixture(scope="module")
def audio_buffers():
    return {k: v.numpy() for k, v in msclap_audio_buffers().items()}


def test_the_frozen_clap_leaves_its_twenty_buffers(audio_buffers):
    """What msclap's HTSAT leaves in an original checkpoint: bn0's statistics, every Swin block's
    relative_position_index and the shifted blocks' attn_mask (the last stage has none)."""
    names = set(audio_buffers)
    assert len(names) == 20
    bn0 = {f"{HTSAT}bn0.{s}" for s in ("running_mean", "running_var", "num_batches_tracked")}
    blocks = [(0, 0), (0, 1), (1, 0), (1, 1)] + [(2, j) for j in range(6)] + [(3, 0), (3, 1)]
    index = {f"{HTSAT}layers.{i}.blocks.{j}.attn.relative_position_index" for i, j in blocks}
    masks = {f"{HTSAT}layers.{i}.blocks.{j}.attn_mask" for i, j in [(0, 1), (1, 1), (2, 1)]}
    masks |= {f"{HTSAT}layers.2.blocks.{j}.attn_mask" for j in (3, 5)}
    assert len(index) == 12 and len(masks) == 5
    assert names == bn0 | index | masks


def test_every_buffer_the_original_saves_is_skipped(audio_buffers):
    buffers = audio_buffers | {
        k: v.numpy() for k, v in (rotary_buffers(32, 128) | legacy_gpt2_buffers()).items()
    }
    buffers |= {"ln_audio.weight": np.ones(1024, np.float32), "ln_audio.bias": np.zeros(1024)}
    prefix = "audio_mapper."
    kept = mats_keymap().to_flax(
        buffers | {f"{prefix}prefix_const": np.zeros((4, 8), np.float32)}, "ckpt.pth"
    )
    assert list(kept) == ["mapper.prefix_const"]


@pytest.mark.parametrize(
    "key",
    [
        f"{HTSAT}bn0.weight",  # a frozen parameter: the original never saves it
        f"{HTSAT}layers.0.blocks.0.attn.relative_position_bias_table",
        f"{HTSAT}layers.0.blocks.0.attn.relative_position_index.extra",
        "audio_encoder.base.htsat.layers.x.blocks.0.attn_mask",
        "clap_text_encoder.base.h.0.attn.c_attn.weight",
        "audio_mapper.transformer.layers.0.mystery",
    ],
)
def test_any_other_unknown_key_is_named(key):
    with pytest.raises(ModelFileError, match=f"ckpt.pth: unexpected key '{key}'"):
        mats_keymap().to_flax({key: np.zeros(2, np.float32)}, "ckpt.pth")
