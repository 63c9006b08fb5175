"""`python -m mats_jax.convert mats`: the original MATS checkpoint (the golden fixture) imports into
a workdir whose mapper and projector give the original code's outputs; export gives back the same
tensors; a missing key is named."""


import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mats_jax.convert.__main__ import main
from mats_jax.listen import Listener
from tests.models.test_mapper import FIXTURE

CONFIG = """
from mats_jax.config_base import base

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
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp / "llm")
    from mats_jax.embedded import smollm2_gguf_path
    from mats_jax.tokenizer import load_tokenizer
    load_tokenizer(smollm2_gguf_path()).save_pretrained(tmp / "llm")
    (tmp / "config.py").write_text(CONFIG.format(llm=str(tmp / "llm")))
    fixture = dict(np.load(FIXTURE))
    state = {k.removeprefix("model/"): torch.from_numpy(v) for k, v in fixture.items() if k.startswith("model/")}
    torch.save({"model": state}, tmp / "mats.pth")
    return tmp, fixture, state


def test_import_reproduces_the_original_outputs_and_export_round_trips(original, tmp_path):
    tmp, fixture, state = original
    assert main(["mats", "--source", str(tmp / "mats.pth"), "--out", str(tmp_path / "work"),
                 "--config", str(tmp / "config.py")]) == 0
    listener = Listener.from_workdir(tmp_path / "work", load_clap=False)
    mapped = listener.model.mapper(jnp.asarray(fixture["input/clap_embedding"]))
    np.testing.assert_allclose(np.asarray(mapped), fixture["expected/mapper_output"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(listener.model.projector(mapped)),
                               fixture["expected/prefix_embeddings"], atol=1e-5, rtol=0)

    assert main(["mats", "--source", str(tmp_path / "work"), "--out", str(tmp_path / "back.pth")]) == 0
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
    assert main(["mats", "--source", str(tmp_path / "broken.pth"), "--out", str(tmp_path / "w"),
                 "--config", str(tmp / "config.py")]) == 1
    assert "mapper.layers.1.mlp.fc2.bias" in capsys.readouterr().err
