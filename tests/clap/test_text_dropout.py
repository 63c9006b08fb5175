"""The CLAP text tower in train mode (clap.text_dropout) against msclap's own TextEncoder: the same
dropout sites at the same rates, each measured dropping at its rate; eval mode is msclap's eval
output; train-mode embeddings spread around it as much as torch's do; positions past the longest
caption and empty packed slots change nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from mats_jax.clap.caption_tokens import msclap_tokenize
from mats_jax.clap.model import CLAP, ClapConfig
from mats_jax.clap.text_dropout import TrainModeText
from mats_jax.config import ConfigError
from tests.references.msclap import copy_text_weights, msclap_text_encoder
from tests.support.tiny_clap import tiny_clap

CAPTIONS = [
    "A dog barks twice while a car passes by",
    "Wow!! a crowd cheers",  # literal "!" ids (0) inside: msclap pools earlier, we too
    "rain",
    "Birds chirp in the distance as wind blows through the trees and leaves rustle softly",
]


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return msclap_text_encoder()  # 2 layers, 32 wide, projection to 24, train mode


@pytest.fixture(scope="module")
def clap(reference) -> CLAP:
    model = nnx.eval_shape(tiny_clap)  # shapes only: the text weights come from the reference
    copy_text_weights(reference, model)
    return model


@pytest.fixture(scope="module")
def tower(clap) -> TrainModeText:
    return TrainModeText(clap)


def torch_embed(reference, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        inputs = {"input_ids": torch.tensor(ids, dtype=torch.long)}
        return reference(inputs | {"attention_mask": torch.tensor(mask)}).numpy()


def ours_to_torch_name(path: tuple) -> str:
    """Our dropout sites by their msclap TextEncoder names (see text_dropout's table)."""
    if path == ("embedding_dropout",):
        return "base.drop"
    if path == ("projection", "dropout"):
        return "projection.drop"
    _, layer, site = path
    names = {"attention": "attn.attn_dropout", "attention_out": "attn.resid_dropout"}
    return f"base.h.{layer}.{names.get(site, 'mlp.dropout')}"


def test_dropout_sites_and_rates_are_msclaps_train_mode(reference, tower):
    theirs = {n: m.p for n, m in reference.named_modules() if isinstance(m, torch.nn.Dropout)}
    ours = {
        ours_to_torch_name(path): node.rate
        for path, node in nnx.iter_graph(tower)
        if isinstance(node, nnx.Dropout)
    }
    assert ours == theirs
    assert theirs["base.drop"] == 0.1 and theirs["projection.drop"] == 0.5  # the brief's rates
    assert len(theirs) == 1 + 3 * 2 + 1


class Recording(nnx.Dropout):
    """A dropout site that records, per call, the share of its nonzero inputs it zeroed and how
    far the kept ones are from input / (1 - rate)."""

    log: dict[str, list[tuple[float, float]]] = {}

    def __init__(self, rate: float, name: str):
        super().__init__(rate)
        self.name = name

    def __call__(self, x, *, deterministic=None, rngs=None):
        y = super().__call__(x, deterministic=deterministic, rngs=rngs)
        x, y = np.asarray(x), np.asarray(y)
        live = x != 0
        kept = live & (y != 0)
        scale_error = np.abs(y[kept] - x[kept] / (1 - self.rate)).max() / np.abs(x[kept]).max()
        dropped = 1.0 - kept.sum() / live.sum()
        Recording.log.setdefault(self.name, []).append((float(dropped), float(scale_error)))
        return y


def test_each_site_drops_its_share_on_a_large_input(reference, clap):
    tower = TrainModeText(nnx.clone(clap))  # its own copy: the sites are replaced below
    for path, node in list(nnx.iter_graph(tower)):
        if isinstance(node, nnx.Dropout):
            name = ours_to_torch_name(path)
            parent = tower
            for key in path[:-1]:
                parent = parent[key] if isinstance(key, int) else getattr(parent, key)
            setattr(parent, path[-1], Recording(node.rate, name))
    rng = np.random.default_rng(0)
    ids = np.zeros((512, 32), np.int32)
    ids[:, :31] = rng.integers(1, 50000, (512, 31))
    ids[:, 31] = 50256
    Recording.log.clear()
    # one width, run eagerly (no switch, no jit): the sites see arrays
    tower.embed_positions(jnp.asarray(ids), jnp.full((512,), 31), jax.random.key(3))
    theirs = {n: m.p for n, m in reference.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert set(Recording.log) == set(theirs)
    for name, calls in Recording.log.items():
        assert len(calls) == 1, name  # each site once per forward
        (dropped, scale_error), rate = calls[0], theirs[name]
        # 512 x 24 projection outputs: 4 standard deviations of the share at p = 0.5 is 0.013
        assert abs(dropped - rate) < (0.015 if name == "projection.drop" else 0.005), name
        assert scale_error < 1e-5, name


def test_eval_mode_is_msclaps_eval_output(reference, clap, tower):
    ids, mask = msclap_tokenize(CAPTIONS)
    reference.eval()
    try:
        expected = torch_embed(reference, ids, mask)
    finally:
        reference.train()
    ours = np.asarray(jax.jit(lambda ids: tower(ids))(ids))
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, np.asarray(clap.embed_text(jnp.asarray(ids))), atol=1e-5)


def test_train_mode_spreads_like_msclaps_and_each_key_is_its_own_draw(reference, tower):
    """Mean squared distance of train-mode embeddings from the eval one, over 1000 draws per
    caption (rows of one batch draw their masks independently): torch's train mode and ours
    agree within the sampling error (about 2% here)."""
    ids, mask = msclap_tokenize(CAPTIONS)
    reference.eval()
    try:
        centre = torch_embed(reference, ids, mask)
    finally:
        reference.train()
    tiled, tiled_mask = np.tile(ids, (250, 1)), np.tile(mask, (250, 1))
    torch.manual_seed(0)
    theirs = np.concatenate([torch_embed(reference, tiled, tiled_mask) for _ in range(4)])
    embed = jax.jit(lambda ids, key: tower(ids, key))
    ours = np.concatenate([np.asarray(embed(tiled, jax.random.key(i))) for i in range(4)])
    theirs, ours = (x.reshape(-1, len(CAPTIONS), centre.shape[-1]) for x in (theirs, ours))
    spread_theirs = ((theirs - centre) ** 2).sum(-1).mean(0)
    spread_ours = ((ours - centre) ** 2).sum(-1).mean(0)
    assert spread_ours.min() > 1.0  # dropout moves the embedding a lot (0.5 on the projection)
    np.testing.assert_allclose(spread_ours, spread_theirs, rtol=0.08)
    first, second = (np.asarray(embed(ids, jax.random.key(k))) for k in (0, 1))
    assert not np.allclose(first, second)  # two keys, two different embeddings
    np.testing.assert_array_equal(np.asarray(embed(ids, jax.random.key(0))), first)


def test_positions_past_the_longest_caption_change_nothing(tower):
    ids, _ = msclap_tokenize(CAPTIONS)  # 77 wide; the longest caption is 21 ids: width 32
    embed = jax.jit(lambda ids, key: tower(ids, key))
    key = jax.random.key(5)
    # the same width runs either way, so the same masks: equal up to float rounding (a mask
    # drawn differently would move the embedding by about its own size)
    np.testing.assert_allclose(
        np.asarray(embed(ids, key)), np.asarray(embed(ids[:, :40], key)), atol=1e-5
    )
    short = np.asarray(embed(ids[:, :21], None))
    np.testing.assert_allclose(short, np.asarray(embed(ids, None)), atol=1e-6)


def test_empty_packed_slots_embed_to_zeros(tower):
    ids, _ = msclap_tokenize(CAPTIONS)
    packed = np.zeros((2, 3, ids.shape[1]), np.int32)  # [rows, max_per_row, text_len]
    packed[0, :3], packed[1, :1] = ids[:3], ids[3:]
    out = np.asarray(jax.jit(lambda x: tower(x))(packed))
    alone = np.asarray(tower(jnp.asarray(ids)))
    assert out.shape == (2, 3, 24)
    np.testing.assert_allclose(out[0], alone[:3], atol=1e-6)
    np.testing.assert_allclose(out[1, 0], alone[3], atol=1e-6)
    assert not out[1, 1:].any()


def test_laion_clap_has_no_train_mode_here():
    clap = nnx.eval_shape(lambda: CLAP(ClapConfig.laion(), rngs=nnx.Rngs(0)))
    with pytest.raises(ConfigError, match="clap.text_dropout"):
        TrainModeText(clap)
