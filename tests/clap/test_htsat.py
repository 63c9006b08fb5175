"""The Flax HTSAT against msclap's HTSAT_Swin_Transformer, stage by stage (f32, ≤1e-4).

Small pieces (the bicubic matrix, window tables, one shifted Swin block) run at once; the
full-size model is the randomised msclap reference of tests/references/msclap.py (shared with
test_model_msclap.py), on the log-mel of real and synthetic 7 s clips (965 frames) and on
LAION's 10 s length (1001 frames).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from mats_jax.clap.htsat import (
    HTSATConfig,
    PatchMerging,
    SwinBlock,
    bicubic_matrix,
    relative_position_index,
    shifted_window_mask,
)
from mats_jax.clap.model import CLAP, STATE_KINDS
from mats_jax.convert.clap import htsat_from_msclap_state, msclap_htsat_keymap
from mats_jax.models.params import flat_params, load_params
from tests.references.msclap import import_msclap_clap, msclap_reference, randomise
from tests.references.torch_io import torch_state
from tests.support.clap_inputs import waveforms


def msclap_htsat_module():
    import_msclap_clap()
    import msclap.models.htsat as htsat

    return htsat


@pytest.mark.parametrize("frames", [965, 1001, 1024, 400])
def test_bicubic_matrix_matches_torch_interpolate(frames, rng):
    x = rng.standard_normal((2, 1, frames, 64)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.tensor(x), (1024, 64), mode="bicubic", align_corners=True
    ).numpy()
    ours = np.einsum("ot,bctm->bcom", bicubic_matrix(frames, 1024).astype(np.float64), x)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_window_tables_match_msclap():
    htsat = msclap_htsat_module()
    for resolution in (64, 32, 16):
        block = htsat.SwinTransformerBlock(
            96, (resolution, resolution), 4, window_size=8, shift_size=4
        )
        np.testing.assert_array_equal(
            shifted_window_mask(resolution, resolution, 8, 4), block.attn_mask.numpy()
        )
        np.testing.assert_array_equal(
            relative_position_index(8), block.attn.relative_position_index.numpy()
        )


def test_shifted_block_and_patch_merging_match_msclap(rng):
    """One shifted-window block (mask, roll, relative bias) then PatchMerging, on a 16×16 grid."""
    htsat = msclap_htsat_module()
    torch.manual_seed(0)
    block = htsat.SwinTransformerBlock(96, (16, 16), 4, window_size=8, shift_size=4).eval()
    merge = htsat.PatchMerging((16, 16), 96).eval()
    randomise(block)
    randomise(merge)
    tensors = {f"layers.0.blocks.1.{k}": v for k, v in torch_state(block).items()}
    tensors |= {f"layers.0.downsample.{k}": v for k, v in torch_state(merge).items()}
    params = msclap_htsat_keymap().to_flax(tensors, "reference")
    config = HTSATConfig()
    ours_block = load_params(
        nnx.eval_shape(
            lambda: SwinBlock(
                config,
                96,
                4,
                16,
                shift=True,
                dtype=jnp.float32,
                param_dtype=jnp.float32,
                rngs=nnx.Rngs(0),
            )
        ),
        {
            k.removeprefix("layers.0.blocks.1."): v
            for k, v in params.items()
            if k.startswith("layers.0.blocks.1.")
        },
        "block",
        STATE_KINDS,
    )
    ours_merge = load_params(
        nnx.eval_shape(
            lambda: PatchMerging(
                96, eps=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
            )
        ),
        {
            k.removeprefix("layers.0.downsample."): v
            for k, v in params.items()
            if k.startswith("layers.0.downsample.")
        },
        "merge",
    )
    x = rng.standard_normal((2, 16 * 16, 96)).astype(np.float32)
    with torch.no_grad():
        after_block, _ = block(torch.tensor(x))
        expected = merge(after_block).numpy()
    y = ours_block(jnp.asarray(x).reshape(2, 16, 16, 96))
    np.testing.assert_allclose(
        np.asarray(y).reshape(2, 256, 96), after_block.numpy(), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(ours_merge(y)).reshape(2, 64, 192), expected, atol=1e-4, rtol=0
    )


@pytest.fixture(scope="module")
def reference():
    return msclap_reference().audio_encoder.base.htsat


@pytest.fixture(scope="module")
def model(reference):
    return htsat_from_msclap_state(torch_state(reference), prefix="", source="reference")


def reference_stages(htsat, log_mel: np.ndarray):
    """msclap's eval forward on log-mel: the image after bn0/resize/fold, each stage's tokens
    (forward hooks), and the output dict."""
    stages = []
    hooks = [
        layer.register_forward_hook(lambda m, i, out: stages.append(out[0].numpy()))
        for layer in htsat.layers
    ]
    try:
        with torch.no_grad():
            x = torch.tensor(log_mel)[:, None]
            image = htsat.reshape_wav2img(htsat.bn0(x.transpose(1, 3)).transpose(1, 3))
            out = htsat.forward_features(image)
    finally:
        for hook in hooks:
            hook.remove()
    return image[:, 0].numpy(), stages, {k: v.numpy() for k, v in out.items()}


def our_stages(model, log_mel: np.ndarray):
    """The same steps as HTSAT.__call__, each jitted (the Swin stages compile once for all
    inputs)."""
    graphdef, state = nnx.split(model)
    image = _jit_image(graphdef, state, jnp.asarray(log_mel))
    stages = _jit_stages(graphdef, state, image)
    return (
        np.asarray(image),
        [np.asarray(x) for x in stages],
        _jit_head(graphdef, state, stages[-1]),
    )


@functools.partial(jax.jit, static_argnums=0)
def _jit_image(graphdef, state, log_mel):
    return nnx.merge(graphdef, state).image(log_mel)


@functools.partial(jax.jit, static_argnums=0)
def _jit_stages(graphdef, state, image):
    model = nnx.merge(graphdef, state)
    x, stages = model.patch_embed(image[..., None]), []
    for stage in model.layers:
        x = stage(x)
        stages.append(x)
    return stages


@functools.partial(jax.jit, static_argnums=0)
def _jit_head(graphdef, state, tokens):
    return nnx.merge(graphdef, state).head(tokens)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["msclap-7s", "laion-10s"])
def test_full_size_matches_msclap_stage_by_stage(reference, model, source):
    if source == "msclap-7s":  # the log-mel msclap computes for the four clips
        with torch.no_grad():
            wave = torch.tensor(waveforms())
            log_mel = reference.logmel_extractor(reference.spectrogram_extractor(wave))[
                :, 0
            ].numpy()
    else:  # 1001 frames, as LAION-CLAP's 10 s at 48 kHz gives
        shape = (len(waveforms()), 1001, 64)
        log_mel = (-30 + 15 * np.random.default_rng(3).standard_normal(shape)).astype(np.float32)
    image, stages, out = reference_stages(reference, log_mel)

    ours_image, ours_stages, result = our_stages(model, log_mel)
    np.testing.assert_allclose(ours_image, image, atol=1e-4, rtol=0)
    for i, (a, b) in enumerate(zip(ours_stages, stages)):
        np.testing.assert_allclose(a.reshape(b.shape), b, atol=1e-4, rtol=0, err_msg=f"stage {i}")
    np.testing.assert_allclose(result.latent, out["latent_output"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.clipwise_output, out["clipwise_output"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.framewise_output, out["framewise_output"], atol=1e-5, rtol=0)


def test_every_variable_has_one_axis_name_per_dimension():
    model = nnx.eval_shape(lambda: CLAP(rngs=nnx.Rngs(0)))
    variables = flat_params(model, (nnx.Param, nnx.BatchStat))
    assert any(k.endswith("bn0.mean") for k in variables)
    for path, var in variables.items():
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var.ndim and None not in axes, path
