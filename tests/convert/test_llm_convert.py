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
from tests.support.outputs import fake_workdir, marker_command, one_line, other_files, snapshot


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


# Vicuna-7B v1.5 ships sharded weights and a SentencePiece tokenizer.model without tokenizer.json.
# Its Linear kernels are stored [out, in] by torch and [in, out] by us.
def _our_name(hf_key: str) -> tuple[str, bool]:
    """(our parameter name, transposed?) of a Hugging Face LLaMA key, written out here (not from
    the key map) so the test checks the map."""
    name = hf_key.removeprefix("model.")
    if name == "embed_tokens.weight":
        return "embed_tokens.embedding", False
    if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
        return name.removesuffix(".weight") + ".scale", False
    return name.removesuffix(".weight") + ".kernel", True


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
def test_a_vicuna_layout_folder_converts_with_its_sentencepiece_tokenizer(tmp_path, weights):
    import sentencepiece

    from mats_jax.models import store
    from tests.support.vicuna import corpus_texts, hf_state, tiny_vicuna_folder

    source = tiny_vicuna_folder(tmp_path / "vicuna", weights=weights)
    assert not (source / "tokenizer.json").exists()
    assert main(["llm", str(source), str(tmp_path / "ckpt"), "--add-pad-token", "[PAD]"]) == 0

    # the tokenizer: the original's (a SentencePiece tokenizer with BOS first) ids, plus [PAD]
    processor = sentencepiece.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    vocab = processor.vocab_size()
    tokenizer = load_tokenizer(tmp_path / "ckpt")
    for text in corpus_texts()[:50]:
        assert tokenizer(text).input_ids == [1] + processor.encode(text), text
    assert len(tokenizer) == vocab + 1 and tokenizer.pad_token_id == vocab
    assert tokenizer.convert_tokens_to_ids("[PAD]") == vocab

    # the weights: every tensor of the shards (the rotary inv_freq buffers aside) as it was
    family, config, params = store.load_model(tmp_path / "ckpt")
    assert family == "llama" and config["vocab_size"] == vocab + 1
    assert config["pad_token_id"] == vocab
    tensors = {k: v for k, v in hf_state(source).items() if not k.endswith("rotary_emb.inv_freq")}
    assert len(params) == len(tensors)
    for key, value in tensors.items():
        name, transposed = _our_name(key)
        expected = value.T if transposed else value
        ours = np.asarray(params[name])
        assert ours.dtype == np.float16, key
        if name == "embed_tokens.embedding":
            ours, pad_row = ours[:vocab], ours[vocab]
            mean = value.astype(np.float32).mean(axis=0).astype(np.float16)
            np.testing.assert_array_equal(pad_row, mean)
        elif name == "lm_head.kernel":
            ours = ours[:, :vocab]
        assert np.array_equal(ours, expected), key


def test_the_converted_tokenizer_loads_offline_without_sentencepiece(tmp_path):
    import os
    import subprocess
    import sys

    from tests.support.paths import ROOT
    from tests.support.vicuna import corpus_texts, tiny_vicuna_folder

    source = tiny_vicuna_folder(tmp_path / "vicuna")
    assert main(["llm", str(source), str(tmp_path / "ckpt"), "--add-pad-token", "[PAD]"]) == 0
    texts = corpus_texts()[:5]
    expected = [load_tokenizer(tmp_path / "ckpt")(t).input_ids for t in texts]
    script = (
        "import json, sys\n"
        "sys.modules['sentencepiece'] = None\n"  # importing either now fails
        "sys.modules['google.protobuf'] = None\n"
        "from mats_jax.models.tokenizer import load_tokenizer\n"
        "tokenizer = load_tokenizer(sys.argv[1])\n"
        "print(json.dumps([tokenizer(t).input_ids for t in json.loads(sys.argv[2])]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ckpt"), json.dumps(texts)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == expected


def test_a_sentencepiece_tokenizer_without_its_package_fails_naming_it(
    tmp_path, capsys, monkeypatch
):
    from tests.support.vicuna import tiny_vicuna_folder

    source = tiny_vicuna_folder(tmp_path / "vicuna")
    monkeypatch.setitem(__import__("sys").modules, "sentencepiece", None)
    for extra in ([], ["--add-pad-token", "[PAD]"]):  # never a checkpoint without its tokenizer
        assert main(["llm", str(source), str(tmp_path / "ckpt"), *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        assert "tokenizer.model" in err and "sentencepiece" in err
        assert not (tmp_path / "ckpt").exists()


def test_outputs_are_never_destroyed(tmp_path, capsys):
    source = tiny_gpt2_folder(tmp_path / "hf")
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"

    def convert(source, out, *extra):
        return main(["llm", str(source), str(out), *extra]), capsys.readouterr().err

    assert convert(source, ckpt)[0] == 0
    assert marker_command(ckpt) == "convert llm"
    for target in (fake_workdir(tmp_path / "workdir"), other_files(tmp_path / "others")):
        before = snapshot(target)
        for what in (source, ckpt):  # importing and exporting
            code, err = convert(what, target, "--overwrite")
            assert code == 1 and one_line(err) == (
                f"error: {target} exists and is not a previous `convert llm` output; "
                "choose another --out"
            )
        assert snapshot(target) == before

    for what, out in ((source, ckpt), (ckpt, back)):
        if not out.exists():
            assert convert(what, out)[0] == 0
        (out / "stale.txt").write_text("from the last conversion")
        before = snapshot(out)
        code, err = convert(what, out)
        assert code == 1 and one_line(err) == (
            f"error: {out} is a previous `convert llm` output; pass --overwrite to replace it"
        )
        assert snapshot(out) == before
        assert convert(what, out, "--overwrite")[0] == 0
        assert not (out / "stale.txt").exists() and marker_command(out) == "convert llm"
    transformers.AutoModelForCausalLM.from_pretrained(back)  # loads cleanly, marker and all
