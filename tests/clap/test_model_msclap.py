"""The Flax CLAP against msclap's own PyTorch CLAP (2023 layout), full size, random weights.

The reference is `msclap.models.clap.CLAP` built exactly as CLAPWrapper builds it for
CLAP_weights_2023.pth, except that the GPT-2 text tower is built from a config (the hub is not
reachable) — see ../shared/clap-notes.md. Default init leaves BatchNorm and LayerNorm as
identities and the relative-position tables near zero, which would hide axis and eps bugs, so
they are randomised before converting. Inputs: noise, a sine and two real ESC-50 clips (44.1
kHz, tiled to 7 s); eight captions' token ids, one with a literal "!" (id 0) inside.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mats_jax.clap.model import ClapConfig, Projection, embed_audio_fn, embed_text_fn
from mats_jax.convert.clap import from_msclap_state
from tests.references.msclap import msclap_reference
from tests.references.torch_io import torch_state
from tests.support.clap_inputs import NUM_SAMPLES, REAL_CLIPS, waveforms
from tests.support.paths import ESC50, shared

FLOOR_MARGIN_DB = -90.0  # log-mel bins within 10 dB of the 1e-10 floor are not compared


def caption_ids() -> tuple[np.ndarray, np.ndarray]:
    """8 captions' GPT-2 ids (each ends with " <|endoftext|>" = 220, 50256, right-padded with
    "!" = 0 to 77) and the attention mask msclap's tokenizer gives them. Caption 3 contains a
    literal "!" (id 0), which shifts msclap's pooled index by one: the quirk we keep."""
    rng = np.random.default_rng(7)
    ids = np.zeros((8, 77), np.int64)
    mask = np.zeros((8, 77), np.int64)
    for i, length in enumerate([3, 9, 15, 22, 30, 41, 60, 77]):
        words = rng.integers(1, 50000, length - 2)
        if i == 3:
            words[5] = 0  # "!"
        ids[i, :length] = np.concatenate([words, [220, 50256]])
        mask[i, :length] = 1
    return ids, mask


@pytest.fixture(scope="module")
def reference():
    return msclap_reference()


@pytest.fixture(scope="module")
def model(reference):
    return from_msclap_state(torch_state(reference), source="reference")


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_real_clips_are_present():
    assert all(shared(ESC50 / n).is_file() for n in REAL_CLIPS)


@pytest.mark.slow
def test_audio_tower_matches_msclap(reference, model):
    wave = waveforms()
    htsat = reference.audio_encoder.base.htsat
    with torch.no_grad():
        log_mel = htsat.logmel_extractor(htsat.spectrogram_extractor(torch.tensor(wave)))[
            :, 0
        ].numpy()
        expected = htsat(torch.tensor(wave))
        expected_embedding = reference.audio_encoder.projection(expected["latent_output"]).numpy()
    expected_latent = expected["latent_output"].numpy()

    ours = np.asarray(model.log_mel(jnp.asarray(wave)))
    assert ours.shape == log_mel.shape == (len(wave), 965, 64)
    audible = log_mel > FLOOR_MARGIN_DB
    assert audible.mean() > 0.8
    err = np.abs(ours - log_mel)
    assert err[audible].max() < 0.05, err[audible].max()
    assert err[log_mel > -60].max() < 5e-3

    embedding, latent = map(np.asarray, embed_audio_fn(model)(jnp.asarray(wave)))
    np.testing.assert_allclose(latent, expected_latent, atol=1e-4, rtol=0)
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-4, rtol=0)
    assert cosine(latent, expected_latent).min() > 0.99999
    assert cosine(embedding, expected_embedding).min() > 0.99999


@pytest.mark.slow
def test_text_tower_matches_msclap(reference, model):
    ids, mask = caption_ids()
    with torch.no_grad():
        expected = reference.caption_encoder(
            {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        ).numpy()
    ours = np.asarray(embed_text_fn(model)(jnp.asarray(ids)))
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert cosine(ours, expected).min() > 0.99999
    # the literal "!" moved the pooled token: index = count(ids != 0) - 1
    assert int(model.pool_index(jnp.asarray(ids))[3]) == 22 - 2


@pytest.mark.slow
def test_similarity_is_msclaps_compute_similarity(reference, model, rng):
    from msclap.CLAPWrapper import CLAPWrapper  # importable now: import_msclap_clap ran

    audio, text = rng.standard_normal((3, 1024)), rng.standard_normal((5, 1024))
    with torch.no_grad():
        expected = CLAPWrapper.compute_similarity(
            types.SimpleNamespace(clap=reference), torch.tensor(audio), torch.tensor(text)
        ).numpy()
    ours = np.asarray(
        model.similarity(jnp.asarray(audio, jnp.float32), jnp.asarray(text, jnp.float32))
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_projection_dropout_only_in_training():
    from flax import nnx

    proj = Projection(16, 32, dropout=0.5, eps=1e-5, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 16)), jnp.float32)
    assert np.array_equal(proj(x), proj(x))
    a, b = proj(x, dropout_key=jax.random.key(1)), proj(x, dropout_key=jax.random.key(2))
    assert not np.allclose(a, proj(x)) and not np.allclose(a, b)


def test_config_round_trips_through_a_dict():
    config = ClapConfig()
    assert ClapConfig.from_dict(config.to_dict()) == config
    assert config.num_samples == NUM_SAMPLES
    with pytest.raises(ValueError, match="bert"):
        ClapConfig(text_encoder="bert")
