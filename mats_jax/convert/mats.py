"""The original MATS checkpoint (`ckpt['model']`, docs/formats.md): its key map and file layouts.

It holds the trainable parts: the mapper (`audio_mapper.*`), the projector (`audio_llama_proj.*`)
and the LLM's LoRA adapters in peft naming. The original `save_checkpoint` deletes only the
parameters that do not train and keeps every buffer, so the file also holds the frozen CLAP's
buffers and the LLaMA rotary `inv_freq`; those, and the unused `ln_audio.*`, are recognised by
name and skipped (`ORIGINAL_BUFFERS`). Any other key is an error naming it.

`mats_jax.training.interchange` turns such a checkpoint into a workdir and back, and writes the
Hugging Face PEFT form (`python -m mats_jax.export`) with `write_peft`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mats_jax.convert.hf_io import read_torch_state, write_safetensors
from mats_jax.convert.keymap import KeyMap, Rule, transpose
from mats_jax.convert.llm import llama_keymap
from mats_jax.runtime.fileio import atomic_directory, atomic_file

LLAMA_PREFIX = "llama_model.base_model.model.model."
# the command whose output a PEFT folder is (its marker; see mats_jax.runtime.fileio)
PEFT_COMMAND = "export --format hf-peft"


def mapper_keymap(torch_prefix: str = "audio_mapper.", flax_prefix: str = "mapper.") -> KeyMap:
    t, f = torch_prefix, flax_prefix
    block, ours = f"{t}transformer.layers.*.", f"{f}layers.*."
    rules = [
        Rule(f"{t}linear.weight", f"{f}linear.kernel", transpose),
        Rule(f"{t}linear.bias", f"{f}linear.bias"),
        Rule(f"{t}prefix_const", f"{f}prefix_const"),
    ]
    for norm in ("norm1", "norm2"):
        rules += [
            Rule(f"{block}{norm}.weight", f"{ours}{norm}.scale"),
            Rule(f"{block}{norm}.bias", f"{ours}{norm}.bias"),
        ]
    for linear in ("attn.to_queries", "attn.to_keys_values", "attn.project", "mlp.fc1", "mlp.fc2"):
        rules += [
            Rule(f"{block}{linear}.weight", f"{ours}{linear}.kernel", transpose),
            Rule(f"{block}{linear}.bias", f"{ours}{linear}.bias"),
        ]
    return KeyMap(tuple(rules))


# Torch keys the original code writes that are not trained parameters, skipped on import. MATS
# holds msclap's towers as `audio_encoder` (HTSAT) and `clap_text_encoder` (GPT-2); `*` is an index.
HTSAT = "audio_encoder.base.htsat."
ORIGINAL_BUFFERS = (
    # the trainable but unused LayerNorm of the original model
    "ln_audio.weight",
    "ln_audio.bias",
    # HTSAT's BatchNorm over mel bins: 3 entries
    f"{HTSAT}bn0.running_mean",
    f"{HTSAT}bn0.running_var",
    f"{HTSAT}bn0.num_batches_tracked",
    # Swin blocks: every block's relative_position_index (12), the shifted blocks' attn_mask (5)
    f"{HTSAT}layers.*.blocks.*.attn.relative_position_index",
    f"{HTSAT}layers.*.blocks.*.attn_mask",
    # GPT-2's causal-mask buffers, written only by transformers versions that kept them persistent
    "clap_text_encoder.base.h.*.attn.bias",
    "clap_text_encoder.base.h.*.attn.masked_bias",
)  # the LLaMA rotary inv_freq is skipped by `llama_keymap`


def mats_keymap() -> KeyMap:
    projector = KeyMap(
        (
            Rule("audio_llama_proj.weight", "projector.kernel", transpose),
            Rule("audio_llama_proj.bias", "projector.bias"),
        )
    )
    llm = llama_keymap(prefix=LLAMA_PREFIX).nest("llm.")
    leftovers = KeyMap((), ignore=ORIGINAL_BUFFERS)
    return mapper_keymap() + projector + llm + leftovers


def read_original(path: str | Path) -> dict[str, np.ndarray]:
    """`ckpt['model']` of an original MATS checkpoint, as float32 numpy (weights_only: no code
    runs).
    """
    return read_torch_state(path, key="model", dtype=np.float32)


def write_original(
    tensors: dict[str, np.ndarray], out: str | Path, *, overwrite: bool = False
) -> None:
    """Original-keyed tensors -> a `{'model': state_dict}` .pth, as the original code saves it
    (an existing file is replaced only with `overwrite`, a folder never)."""
    import torch

    with atomic_file(out, overwrite=overwrite) as tmp:
        torch.save(
            {"model": {k: torch.from_numpy(np.array(v, copy=True)) for k, v in tensors.items()}},
            tmp,
        )


def write_peft(
    tensors: dict[str, np.ndarray],
    lora: Mapping[str, Any],
    base_model: str,
    out: str | Path,
    extra_files: Mapping[str, str] = {},
    *,
    command: str = PEFT_COMMAND,
    overwrite: bool = False,
) -> None:
    """Original-keyed tensors -> a folder with a PEFT LoRA adapter for the LLM
    (`adapter_config.json`, `adapter_model.safetensors`: `PeftModel.from_pretrained(base, out)`
    loads it), the mapper and projector in `mapper.safetensors` (original keys) and
    `extra_files` ({name: text}). The folder is marked as `command`'s output; an existing one
    is replaced only if it is a previous output of `command` and `overwrite` is true."""
    llm_prefix = "llama_model."
    adapter = {
        k.removeprefix(llm_prefix).replace(".default.", "."): v
        for k, v in tensors.items()
        if k.startswith(llm_prefix)
    }
    bridge = {k: v for k, v in tensors.items() if not k.startswith(llm_prefix)}
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora["rank"],
        "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"],
        "target_modules": sorted(lora["targets"]),
        "bias": "none",
        "base_model_name_or_path": base_model,
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    with atomic_directory(out, command=command, overwrite=overwrite) as folder:
        write_safetensors(folder / "adapter_model.safetensors", adapter)
        write_safetensors(folder / "mapper.safetensors", bridge)
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
        for name, text in extra_files.items():
            (folder / name).write_text(text)
