"""`python -m mats_jax.convert llm`: HF -> orbax -> HF is bit-identical; bad input fails clearly."""

import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from mats_jax.convert.__main__ import main
from mats_jax.convert.llm import load_llm
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.fileio import ModelFileError
from tests.support.models import tiny_llama_folder


def tiny_gpt2_folder(path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "make",
    [tiny_llama_folder, tiny_gpt2_folder, lambda p: tiny_llama_folder(p, torch.bfloat16)],
    ids=["llama", "gpt2", "llama-bf16"],
)
def test_hf_to_orbax_to_hf_is_bit_identical(tmp_path, make):
    source = make(tmp_path / "hf")
    assert main(["llm", str(source), str(tmp_path / "ckpt")]) == 0
    assert main(["llm", str(tmp_path / "ckpt"), str(tmp_path / "back")]) == 0
    original, back = (
        load_file(source / "model.safetensors"),
        load_file(tmp_path / "back" / "model.safetensors"),
    )
    assert set(back) == set(original)
    for key, value in back.items():
        assert value.dtype == original[key].dtype, key
        assert np.array_equal(value.view(np.uint8), original[key].view(np.uint8)), key
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")  # loads cleanly


def test_pad_token_grows_the_vocabulary_like_vicuna(tmp_path):
    source = tiny_llama_folder(tmp_path / "hf")
    assert main(["llm", str(source), str(tmp_path / "ckpt"), "--add-pad-token", "[PAD]"]) == 0
    config = json.loads((tmp_path / "ckpt" / "mats_jax.json").read_text())["config"]
    assert config["vocab_size"] == 49153 and config["pad_token_id"] == 49152
    model = load_llm(tmp_path / "ckpt")
    assert model.embed_tokens.embedding.shape == (49153, 32)
    assert load_tokenizer(tmp_path / "ckpt").convert_tokens_to_ids("[PAD]") == 49152


def test_unexpected_key_is_named(tmp_path, capsys):
    source = tiny_llama_folder(tmp_path / "hf")
    tensors = load_file(source / "model.safetensors")
    tensors["model.layers.0.mystery.weight"] = np.zeros(3, np.float32)
    save_file(tensors, source / "model.safetensors")
    assert main(["llm", str(source), str(tmp_path / "ckpt")]) == 1
    assert "unexpected key 'model.layers.0.mystery.weight'" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_missing_key_is_named(tmp_path):
    source = tiny_llama_folder(tmp_path / "hf")
    tensors = load_file(source / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, source / "model.safetensors")
    with pytest.raises(ModelFileError, match="missing key .layers.1.mlp.up_proj.kernel"):
        load_llm(source)


def test_bad_sources_fail_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.gguf").write_text("not a gguf")
    for bad in [tmp_path / "missing", tmp_path / "notes.gguf"]:
        assert main(["llm", str(bad), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and str(bad) in err and "\n" not in err
