"""Read a llama.cpp GGUF file as a Hugging Face LLaMA config and state dict.

Mirrors transformers' GGUF loader (`modeling_gguf_pytorch_utils.load_gguf_checkpoint` with its
`LlamaTensorProcessor`), so the tensors equal `LlamaForCausalLM.from_pretrained(dir,
gguf_file=...)`'s state dict. Unlike it, a tensor we cannot place is an error, not dropped: a
silently ignored `rope_freqs` or bias would give a model that loads but computes the wrong thing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from mats_jax.runtime.fileio import ModelFileError

_LAYER_NAMES = {  # GGUF `blk.{i}.{name}.weight` -> HF `model.layers.{i}.{name}.weight`
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_TOKEN_IDS = {  # HF config key -> `tokenizer.ggml.` key
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "padding_token_id",
}


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (HF LlamaConfig dict, float32 tensors by HF name in HF's [out, in] layout)."""
    reader = _open(Path(path))
    config = _llama_config(reader, path)
    tensors = {}
    for tensor in reader.tensors:
        name = _hf_name(tensor.name, path)
        weights = np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
        if name.endswith("q_proj.weight"):
            weights = _undo_rope_permute(weights, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            weights = _undo_rope_permute(weights, config["num_key_value_heads"])
        tensors[name] = weights
    missing = _expected_names(config) - tensors.keys()
    if missing:
        raise ModelFileError(f"{path}: missing tensors {sorted(missing)[:5]}")
    return config, tensors


def _open(path: Path) -> gguf.GGUFReader:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open ({e.strerror})") from e
    if magic != b"GGUF":
        raise ModelFileError(f"{path}: not a GGUF file")
    try:
        return gguf.GGUFReader(path)
    except (OSError, ValueError, IndexError, KeyError) as e:
        raise ModelFileError(f"{path}: corrupt GGUF file ({e})") from e


def _llama_config(reader: gguf.GGUFReader, path: str | os.PathLike) -> dict[str, Any]:
    def field(key: str, default: Any = None) -> Any:
        found = reader.fields.get(key)
        return found.contents() if found is not None else default

    def required(key: str) -> Any:
        value = field(f"llama.{key}")
        if value is None:
            raise ModelFileError(f"{path}: metadata llama.{key} is missing")
        return value

    architecture = field("general.architecture")
    if architecture != "llama":
        raise ModelFileError(f"{path}: architecture {architecture!r} is not supported")
    tensor_names = {t.name for t in reader.tensors}
    hidden, heads = int(required("embedding_length")), int(required("attention.head_count"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(required("feed_forward_length")),
        "num_hidden_layers": int(required("block_count")),
        "num_attention_heads": heads,
        # absent means multi-head attention, as in llama.cpp and LlamaConfig
        "num_key_value_heads": int(field("llama.attention.head_count_kv", heads)),
        # transformers reads head_dim from the rope width, as llama.cpp writes it for llama
        "head_dim": int(field("llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(required("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(required("context_length")),
        "vocab_size": int(field("llama.vocab_size") or len(field("tokenizer.ggml.tokens", []))),
        # llama.cpp writes `output.weight` only when it differs from the embedding
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    for hf_key, gguf_key in _TOKEN_IDS.items():
        if (token_id := field(f"tokenizer.ggml.{gguf_key}")) is not None:
            config[hf_key] = int(token_id)
    scaling = field("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        factor = float(field("llama.rope.scaling.factor", 1.0))
        config["rope_scaling"] = {"rope_type": scaling, "factor": factor}
        original = field("llama.rope.scaling.original_context_length")
        if original is not None and scaling != "linear":  # linear scaling does not use it
            config["rope_scaling"]["original_max_position_embeddings"] = int(original)
    return config


def _hf_name(gguf_name: str, path: str | os.PathLike) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match[2] not in _LAYER_NAMES:
        raise ModelFileError(f"{path}: tensor {gguf_name!r} has no LLaMA counterpart")
    return f"model.layers.{match[1]}.{_LAYER_NAMES[match[2]]}.weight"


def _undo_rope_permute(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (per head, rotary pairs interleaved -> halves)."""
    rows = weights.shape[0]
    per_head = weights.reshape(n_heads, rows // n_heads // 2, 2, *weights.shape[1:])
    return per_head.swapaxes(1, 2).reshape(weights.shape)


def _expected_names(config: dict[str, Any]) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not config["tie_word_embeddings"]:
        names.add("lm_head.weight")
    for i in range(config["num_hidden_layers"]):
        names.update(f"model.layers.{i}.{name}.weight" for name in _LAYER_NAMES.values())
    return names
