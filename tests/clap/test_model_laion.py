"""The LAION family of the Flax CLAP against transformers' own `ClapModel`, full size, random
weights.

One fused `ClapModel(ClapConfig(enable_fusion=True))` is built per session; the unfused reference
is a `ClapAudioModel` holding the same audio weights (the fused model minus mel_conv2d and the
AFF block), and both share the fused model's text tower and projections. Default init leaves
every bias at zero, BatchNorm/LayerNorm as identities, the relative-position tables at zero and
the Linear/Conv weights tiny (std ~0.006), which would hide layout and eps bugs, so `randomise`
redraws all of them. Features come from our `FeatureExtractor` and are checked against
transformers' `ClapFeatureExtractor` with the same random crops (a seeded generator stands in for
`np.random` in transformers' module). Text: 8 captions given as RoBERTa ids (<s>=0 ... </s>=2,
right-padded with <pad>=1) with their attention mask.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from mats_jax.clap.laion_features import FeatureExtractor, mel_filter_bank, pad_waveform
from mats_jax.clap.model import (
    CLAP,
    LAION,
    STATE_KINDS,
    ClapConfig,
    embed_audio_features_fn,
    embed_audio_fn,
    embed_text_fn,
)
from mats_jax.clap.roberta import RoBERTa, RobertaConfig
from mats_jax.convert.clap import _hf_roberta_rules
from mats_jax.convert.keymap import KeyMap
from mats_jax.models.params import flat_params, load_params
from tests.references.laion import fused_reference, our_model, randomise, unfused_audio_reference
from tests.references.torch_io import torch_state
from tests.support.clap_inputs import REAL_CLIPS, SR, caption_ids, clips
from tests.support.paths import ESC50, shared

FUSION = ("unfused", "fused")


class SeededNumpyRandom:
    """Stands in for `np.random` inside transformers' feature extractor: the same draws our
    FeatureExtractor makes from a Generator with the same seed."""

    def __init__(self, seed: int):
        self.generator = np.random.default_rng(seed)

    def randint(self, low, high):
        return int(self.generator.integers(low, high))

    def choice(self, a):
        a = np.asarray(a)
        return a[self.generator.integers(len(a))]


def hf_features(truncation: str, clips, seed: int):
    """transformers' ClapFeatureExtractor output with its randomness seeded."""
    from transformers.models.clap import feature_extraction_clap

    extractor = transformers.ClapFeatureExtractor(truncation=truncation)
    original, feature_extraction_clap.np.random = (
        feature_extraction_clap.np.random,
        SeededNumpyRandom(seed),
    )
    try:
        out = extractor(clips, sampling_rate=SR, return_tensors="np")
    finally:
        feature_extraction_clap.np.random = original
    return extractor, out["input_features"], out["is_longer"][:, 0]


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def assert_close_embeddings(ours, expected):
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert cosine(ours, expected).min() > 0.99999


# ---------------------------------------------------------------------------------------------
# Fast checks (no full-size model).


def test_real_clip_is_present():
    assert shared(ESC50 / REAL_CLIPS[0]).is_file()


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_features_match_clap_feature_extractor(truncation):
    extractor, expected, expected_longer = hf_features(truncation, list(clips()), seed=5)
    ours = FeatureExtractor(truncation=truncation)(list(clips()), np.random.default_rng(5))
    np.testing.assert_array_equal(
        extractor.mel_filters, mel_filter_bank(513, 64, 0.0, 14000.0, SR, slaney=False)
    )
    np.testing.assert_allclose(
        extractor.mel_filters_slaney,
        mel_filter_bank(513, 64, 0.0, 14000.0, SR, slaney=True),
        rtol=1e-12,
        atol=0,
    )
    assert (
        ours.features.shape == expected.shape == (3, 4 if truncation == "fusion" else 1, 1001, 64)
    )
    np.testing.assert_array_equal(ours.is_longer, expected_longer)
    assert ours.is_longer.tolist() == [True, False, False]
    # bit-exact here; the shrunk global mel mirrors torch's FMA-contracted bilinear kernel, which
    # another CPU build may round differently (plain float32 arithmetic is 1.2e-4 dB off)
    np.testing.assert_allclose(ours.features, expected, atol=1e-3, rtol=0)


def test_feature_randomness_is_seeded_and_quirks_kept():
    extractor = FeatureExtractor(truncation="fusion")
    long_clip, short_clip = clips()[0], clips()[1]
    a, b = extractor([long_clip], 3), extractor([long_clip], 3)
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, extractor([long_clip], 4).features)
    # fusion, no long clip: transformers flags one random clip as longer; optional here
    assert extractor([short_clip, short_clip], 0).is_longer.sum() == 1
    assert extractor([short_clip, short_clip], 0, mark_one_longer=False).is_longer.sum() == 0
    # padding modes: repeatpad tiles whole copies then zero-pads, repeat tiles and cuts
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(pad_waveform(x, 8, "repeatpad"), [1, 2, 3, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(pad_waveform(x, 8, "repeat"), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(pad_waveform(x, 8, "pad"), [1, 2, 3, 0, 0, 0, 0, 0])


def test_small_roberta_matches_clap_text_model(rng):
    """A 2-layer RoBERTa (eps 1e-5, another pad id) against ClapTextModel: positions, mask,
    pooler."""
    hf = transformers.ClapTextConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        layer_norm_eps=1e-5,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    reference = transformers.ClapTextModel(hf).eval()
    randomise(reference)
    config = RobertaConfig.from_hf(hf.to_dict())
    assert config.layer_norm_eps == 1e-5 and config.pad_token_id == 3
    params = KeyMap(
        tuple(_hf_roberta_rules("", "")),
        ignore=("embeddings.position_ids", "embeddings.token_type_ids"),
    ).to_flax(torch_state(reference), "reference")
    ours = load_params(
        nnx.eval_shape(lambda: RoBERTa(config, rngs=nnx.Rngs(0))), params, "reference", STATE_KINDS
    )
    ids = rng.integers(4, 99, (3, 12))
    mask = np.ones_like(ids)
    ids[0, 7:], mask[0, 7:] = 3, 0
    ids[1, 2:], mask[1, 2:] = 3, 0
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        positions = reference.embeddings.create_position_ids_from_input_ids(
            torch.tensor(ids), 3
        ).numpy()
    np.testing.assert_array_equal(np.asarray(ours.position_ids(jnp.asarray(ids))), positions)
    hidden, pooled = ours(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(hidden), out.last_hidden_state.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=1e-5, rtol=0)


def test_laion_config_from_hf_and_round_trip():
    for fusion in (False, True):
        hf = transformers.ClapConfig(audio_config={"enable_fusion": fusion}).to_dict()
        config = ClapConfig.from_hf(hf)
        assert config == ClapConfig.laion(fusion=fusion)
        assert ClapConfig.from_dict(config.to_dict()) == config
        assert config.feature_extractor == FeatureExtractor(
            truncation="fusion" if fusion else "rand_trunc"
        )
    # a preprocessor_config.json overrides the extractor settings (LAION's own fmin is 50 Hz)
    config = ClapConfig.from_hf(
        hf, {"frequency_min": 50, "truncation": "fusion", "padding": "repeat"}
    )
    assert (config.fmin, config.padding) == (50.0, "repeat")
    with pytest.raises(ValueError, match="channel_map"):
        ClapConfig.from_hf(
            transformers.ClapConfig(
                audio_config={"enable_fusion": True, "fusion_type": "channel_map"}
            ).to_dict()
        )
    with pytest.raises(ValueError, match="fused audio tower"):
        ClapConfig.laion(fusion=False, truncation="fusion")
    with pytest.raises(ValueError, match="roberta"):
        ClapConfig(family=LAION)


def test_every_laion_variable_has_one_axis_name_per_dimension():
    model = nnx.eval_shape(lambda: CLAP(ClapConfig.laion(fusion=True), rngs=nnx.Rngs(0)))
    variables = flat_params(model, (nnx.Param, nnx.BatchStat))
    assert any(k.endswith("patch_embed.fusion.global_att.bn2.var") for k in variables)
    for path, var in variables.items():
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var.ndim and None not in axes, path


# ---------------------------------------------------------------------------------------------
# Full size (slow).


@pytest.mark.slow
@pytest.mark.parametrize("fusion", [False, True], ids=FUSION)
def test_audio_tower_matches_clap_model(fusion):
    truncation = "fusion" if fusion else "rand_trunc"
    _, features, is_longer = hf_features(truncation, list(clips()), seed=11)
    ours_features = ClapConfig.laion(fusion=fusion).feature_extractor(list(clips()), 11)
    np.testing.assert_allclose(ours_features.features, features, atol=1e-3, rtol=0)
    reference = fused_reference() if fusion else unfused_audio_reference()
    audio_model = reference.audio_model if fusion else reference
    with torch.no_grad():
        latent = audio_model(
            input_features=torch.tensor(features), is_longer=torch.tensor(is_longer[:, None])
        ).pooler_output
        expected = torch.nn.functional.normalize(
            fused_reference().audio_projection(latent), dim=-1
        ).numpy()
    embed = embed_audio_features_fn(our_model(fusion))
    embedding, ours_latent = map(
        np.asarray, embed(jnp.asarray(ours_features.features), jnp.asarray(ours_features.is_longer))
    )
    np.testing.assert_allclose(ours_latent, latent.numpy(), atol=1e-4, rtol=0)
    assert_close_embeddings(embedding, expected)
    print(
        f"LAION {FUSION[fusion]} audio: max |diff| {np.abs(embedding - expected).max():.2e}, "
        f"min cosine {cosine(embedding, expected).min():.8f}"
    )
    if fusion:  # the crops matter: without is_longer the long clip's embedding moves
        unfused_path, _ = embed(jnp.asarray(ours_features.features), jnp.zeros(3, bool))
        assert np.abs(np.asarray(unfused_path)[0] - embedding[0]).max() > 1e-3
        np.testing.assert_allclose(np.asarray(unfused_path)[1:], embedding[1:], atol=1e-6)


@pytest.mark.slow
def test_waveform_path_matches_clap_model_on_short_clips():
    """CLAP.embed_audio: the JAX log-mel of clips padded to 10 s (no crops), unfused model."""
    short = [clips()[2], clips()[0][: 7 * SR]]
    _, features, is_longer = hf_features("rand_trunc", short, seed=0)
    assert not is_longer.any()
    with torch.no_grad():
        latent = unfused_audio_reference()(input_features=torch.tensor(features)).pooler_output
        expected = torch.nn.functional.normalize(
            fused_reference().audio_projection(latent), dim=-1
        ).numpy()
    waves = np.stack([pad_waveform(c, 10 * SR, "repeatpad") for c in short])
    embedding, _ = map(np.asarray, embed_audio_fn(our_model(False))(jnp.asarray(waves)))
    assert_close_embeddings(embedding, expected)


@pytest.mark.slow
def test_text_tower_matches_clap_model():
    ids, mask = caption_ids()
    with torch.no_grad():
        expected = (
            fused_reference()
            .get_text_features(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
            .pooler_output.numpy()
        )
    ours = np.asarray(embed_text_fn(our_model(True))(jnp.asarray(ids), jnp.asarray(mask)))
    assert_close_embeddings(ours, expected)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1, atol=1e-6)
    print(
        f"LAION text: max |diff| {np.abs(ours - expected).max():.2e}, "
        f"min cosine {cosine(ours, expected).min():.8f}"
    )


@pytest.mark.slow
def test_similarity_is_clap_models_logits_per_audio(rng):
    reference, model = fused_reference(), our_model(True)
    audio, text = rng.standard_normal((3, 512)), rng.standard_normal((5, 512))
    a = audio / np.linalg.norm(audio, axis=-1, keepdims=True)
    t = text / np.linalg.norm(text, axis=-1, keepdims=True)
    expected = a @ t.T * reference.logit_scale_a.exp().item()
    ours = np.asarray(
        model.similarity(jnp.asarray(audio, jnp.float32), jnp.asarray(text, jnp.float32))
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
