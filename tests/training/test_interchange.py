"""`python -m mats_jax.convert mats` and `python -m mats_jax.export`: the original MATS checkpoint
(the golden fixture) imports into a workdir whose mapper and projector give the original code's
outputs; export gives back the same tensors; the PEFT export loads into transformers + peft and
gives our LLM's logits; a missing key is named."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mats_jax.convert.__main__ import main
from mats_jax.convert.hf_io import read_safetensors
from mats_jax.export import main as export
from mats_jax.inference.listener import Listener
from tests.support.paths import FIXTURE

CONFIG = """
from mats_jax.config import base

def get_config():
    c = base()
    c.llm.checkpoint = {llm!r}
    c.clap.dim = 32
    c.mapper.update(dim=64, prefix_length=4, clip_length=4, num_layers=2, num_heads=8)
    c.lora.update(rank=2, alpha=8.0)
    return c
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mats")
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp / "llm")
    from mats_jax.models.tokenizer import load_tokenizer
    from mats_jax.runtime.assets import smollm2_gguf_path

    load_tokenizer(smollm2_gguf_path()).save_pretrained(tmp / "llm")
    (tmp / "config.py").write_text(CONFIG.format(llm=str(tmp / "llm")))
    fixture = dict(np.load(FIXTURE))
    state = {
        k.removeprefix("model/"): torch.from_numpy(v)
        for k, v in fixture.items()
        if k.startswith("model/")
    }
    torch.save({"model": state}, tmp / "mats.pth")
    return tmp, fixture, state


def test_import_reproduces_the_original_outputs_and_export_round_trips(original, tmp_path):
    tmp, fixture, state = original
    assert (
        main(
            [
                "mats",
                "--source",
                str(tmp / "mats.pth"),
                "--out",
                str(tmp_path / "work"),
                "--config",
                str(tmp / "config.py"),
            ]
        )
        == 0
    )
    listener = Listener.from_workdir(tmp_path / "work", load_clap=False)
    mapped = listener.model.mapper(jnp.asarray(fixture["input/clap_embedding"]))
    np.testing.assert_allclose(
        np.asarray(mapped), fixture["expected/mapper_output"], atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(listener.model.projector(mapped)),
        fixture["expected/prefix_embeddings"],
        atol=1e-5,
        rtol=0,
    )

    assert (
        export(
            [
                "--workdir",
                str(tmp_path / "work"),
                "--format",
                "mats-torch",
                "--out",
                str(tmp_path / "back.pth"),
            ]
        )
        == 0
    )
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    kept = {k: v for k, v in state.items() if not k.startswith("ln_audio") and "inv_freq" not in k}
    assert set(back) == set(kept)
    for key, value in kept.items():
        assert torch.equal(back[key], value), key


def test_a_missing_key_is_named(original, tmp_path, capsys):
    tmp, _, state = original
    broken = dict(state)
    del broken["audio_mapper.transformer.layers.1.mlp.fc2.bias"]
    torch.save({"model": broken}, tmp_path / "broken.pth")
    assert (
        main(
            [
                "mats",
                "--source",
                str(tmp_path / "broken.pth"),
                "--out",
                str(tmp_path / "w"),
                "--config",
                str(tmp / "config.py"),
            ]
        )
        == 1
    )
    assert "mapper.layers.1.mlp.fc2.bias" in capsys.readouterr().err


def test_peft_export_loads_into_transformers_and_matches_our_logits(original, tmp_path):
    import peft
    import transformers

    tmp, fixture, state = original
    assert (
        main(
            [
                "mats",
                "--source",
                str(tmp / "mats.pth"),
                "--out",
                str(tmp_path / "work"),
                "--config",
                str(tmp / "config.py"),
            ]
        )
        == 0
    )
    assert (
        export(
            [
                "--workdir",
                str(tmp_path / "work"),
                "--format",
                "hf-peft",
                "--out",
                str(tmp_path / "peft"),
            ]
        )
        == 0
    )

    base = transformers.LlamaForCausalLM.from_pretrained(
        tmp / "llm", torch_dtype=torch.float32
    ).eval()
    ids = np.random.default_rng(0).integers(0, 49152, (2, 12))
    with torch.no_grad():
        without_lora = base(torch.from_numpy(ids)).logits.numpy()
        reference = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
        expected = reference(torch.from_numpy(ids)).logits.numpy()
    assert (
        reference.peft_config["default"].r == 2 and reference.peft_config["default"].lora_alpha == 8
    )
    assert np.abs(expected - without_lora).max() > 1e-3  # the adapter was loaded and acts
    listener = Listener.from_workdir(tmp_path / "work", load_clap=False)
    logits, _ = listener.model.llm(jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)

    bridge = read_safetensors(tmp_path / "peft" / "mapper.safetensors")
    assert set(bridge) == {k for k in state if k.startswith(("audio_mapper.", "audio_llama_proj."))}
    for key, value in bridge.items():
        np.testing.assert_array_equal(value, state[key].numpy())
