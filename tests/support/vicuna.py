"""A tiny folder laid out as Vicuna-7B v1.5 ships: LLaMA config.json, sharded weights (PyTorch
`.bin` with `pytorch_model.bin.index.json`, or safetensors with its index), and the tokenizer as
a SentencePiece `tokenizer.model` with tokenizer_config.json and special_tokens_map.json, but no
`tokenizer.json`. The SentencePiece model is trained here on the shipped corpus' texts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import transformers

from tests.support.paths import ROOT

CORPUS = ROOT / "mats_jax" / "data" / "corpus" / "train.jsonl"
SPECIAL = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def corpus_texts() -> list[str]:
    """The texts of the shipped training corpus (AudioCaps, Clotho, ... captions), in order."""
    return [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line]


def train_sentencepiece(path: Path, texts: list[str], vocab_size: int = 512) -> Path:
    """A LLaMA-like SentencePiece BPE model (byte fallback, digits split, unk 0 / bos 1 / eos 2,
    no pad) trained on `texts`, written to `path`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def _added_token(content: str, typed: bool = True) -> dict:
    # how Vicuna's tokenizer_config.json (typed) and special_tokens_map.json spell special tokens
    return {
        **({"__type": "AddedToken"} if typed else {}),
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


def tiny_vicuna_folder(path: Path, *, weights: str = "bin", shards: int = 2) -> Path:
    """The folder at `path`: random float16 weights with Hugging Face names (the rotary
    `inv_freq` buffers included, as Vicuna's bins have them), split into `shards` files of
    `weights` ("bin" or "safetensors") with their index, and a SentencePiece-only tokenizer."""
    path.mkdir(parents=True)
    tokenizer_model = train_sentencepiece(path / "tokenizer.model", corpus_texts())
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model)).vocab_size()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 4,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.31.0",
        "use_cache": True,
        "vocab_size": vocab,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "bos_token": _added_token("<s>"),
                "clean_up_tokenization_spaces": False,
                "eos_token": _added_token("</s>"),
                "legacy": False,
                "model_max_length": 4096,
                "pad_token": None,
                "padding_side": "right",
                "sp_model_kwargs": {},
                "tokenizer_class": "LlamaTokenizer",
                "unk_token": _added_token("<unk>"),
            },
            indent=2,
        )
        + "\n"
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({k: _added_token(v, typed=False) for k, v in SPECIAL.items()}) + "\n"
    )

    torch.manual_seed(0)
    hf = transformers.LlamaConfig(**{k: v for k, v in config.items() if k != "torch_dtype"})
    state = transformers.LlamaForCausalLM(hf).to(torch.float16).state_dict()
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(config["num_hidden_layers"]):
        state[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    state = {k: v.contiguous() for k, v in state.items()}
    names = list(state)
    weight_map = {}
    for n, part in enumerate(np.array_split(np.arange(len(names)), shards), 1):
        if weights == "bin":
            file = f"pytorch_model-{n:05d}-of-{shards:05d}.bin"
            torch.save({names[i]: state[names[i]] for i in part}, path / file)
        else:
            from safetensors.torch import save_file

            file = f"model-{n:05d}-of-{shards:05d}.safetensors"
            save_file({names[i]: state[names[i]] for i in part}, path / file, {"format": "pt"})
        weight_map |= {names[i]: file for i in part}
    index = "pytorch_model.bin.index.json" if weights == "bin" else "model.safetensors.index.json"
    total = sum(v.numel() * v.element_size() for v in state.values())
    (path / index).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )
    return path


def hf_state(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's shards (as listed by its index), as numpy."""
    index = next(path.glob("*.index.json"))
    out = {}
    for file in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        if file.endswith(".bin"):
            tensors = torch.load(path / file, weights_only=True)
        else:
            from safetensors.torch import load_file

            tensors = load_file(path / file)
        out |= {k: v.numpy() for k, v in tensors.items()}
    return out
