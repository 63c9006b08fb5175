"""Checkpoints as the original MATS code writes them, for the import tests.

The original `Runner.save_checkpoint` (MATS-LLaMA/algorithm/runner.py) saves
`{"model": state_dict, "optimizer", "config", "scaler", "epoch"}`, where `state_dict` is the
whole model's minus the parameters that do not require gradients: every buffer stays. The model
(`AudioFreeMLLM`) holds msclap's towers as `audio_encoder` (HTSAT) and `clap_text_encoder`
(GPT-2), the LLM as `llama_model` (peft-wrapped LLaMA, LoRA on q_proj/v_proj), and the trained
`audio_mapper`, `audio_llama_proj` and an unused `ln_audio`.

Here the trained tensors are random, in the original's torch names and layouts (written out
from the original model code, not from our key map), and the buffers come from msclap's own
HTSAT module by the same rule (state_dict minus frozen parameters).
"""

from __future__ import annotations

import numpy as np
import torch

from tests.references.msclap import import_msclap_clap


def kept_by_save_checkpoint(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """What the original `save_checkpoint` keeps of `module` (frozen as the original freezes its
    CLAP towers), under `prefix`: its state dict minus the parameters that need no gradient."""
    for p in module.parameters():
        p.requires_grad = False
    grads = {name: p.requires_grad for name, p in module.named_parameters()}
    return {
        prefix + name: value for name, value in module.state_dict().items() if grads.get(name, True)
    }


def msclap_audio_buffers() -> dict[str, torch.Tensor]:
    """The entries a frozen msclap 2023 audio encoder leaves in an original checkpoint (its
    buffers: bn0 statistics, relative_position_index, attn_mask), as `audio_encoder.*`."""
    msclap_clap = import_msclap_clap()
    torch.manual_seed(0)
    # the arguments msclap's CLAP passes for config_2023.yml (out_emb 768, d_proj 1024)
    encoder = msclap_clap.AudioEncoder("HTSAT", 768, 1024, 44100, 1024, 320, 64, 50, 8000, 527)
    return kept_by_save_checkpoint(encoder, "audio_encoder.")


def legacy_gpt2_buffers(layers: int = 12, positions: int = 1024) -> dict[str, torch.Tensor]:
    """GPT-2's causal-mask buffers as the transformers versions that kept them persistent wrote
    them under the original's `clap_text_encoder` (today's transformers writes none)."""
    mask = torch.tril(torch.ones((positions, positions), dtype=torch.bool)).view(
        1, 1, positions, positions
    )
    out = {}
    for i in range(layers):
        out[f"clap_text_encoder.base.h.{i}.attn.bias"] = mask
        out[f"clap_text_encoder.base.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


def trained_shapes(
    *,
    clap_dim: int,
    dim: int,
    prefix_length: int,
    clip_length: int,
    num_layers: int,
    mlp_ratio: float,
    hidden_size: int,
    llm_layers: int,
    lora_rank: int,
) -> dict[str, tuple[int, ...]]:
    """Torch names and shapes of what trains in the original model (transformer mapper): its
    `audio_mapper`, `audio_llama_proj`, `ln_audio` and peft LoRA on q_proj/v_proj."""
    shapes = {
        "audio_mapper.linear.weight": (clip_length * dim, clap_dim),
        "audio_mapper.linear.bias": (clip_length * dim,),
        "audio_mapper.prefix_const": (prefix_length, dim),
        "audio_llama_proj.weight": (hidden_size, dim),
        "audio_llama_proj.bias": (hidden_size,),
        "ln_audio.weight": (clap_dim,),  # trains (requires_grad) but is never used
        "ln_audio.bias": (clap_dim,),
    }
    hidden = int(dim * mlp_ratio)
    for i in range(num_layers):
        block = f"audio_mapper.transformer.layers.{i}."
        shapes |= {
            f"{block}norm1.weight": (dim,),
            f"{block}norm1.bias": (dim,),
            f"{block}attn.to_queries.weight": (dim, dim),  # the mapper's q/kv have no bias
            f"{block}attn.to_keys_values.weight": (2 * dim, dim),
            f"{block}attn.project.weight": (dim, dim),
            f"{block}attn.project.bias": (dim,),
            f"{block}norm2.weight": (dim,),
            f"{block}norm2.bias": (dim,),
            f"{block}mlp.fc1.weight": (hidden, dim),
            f"{block}mlp.fc1.bias": (hidden,),
            f"{block}mlp.fc2.weight": (dim, hidden),
            f"{block}mlp.fc2.bias": (dim,),
        }
    for i in range(llm_layers):
        for proj in ("q_proj", "v_proj"):
            lora = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}."
            shapes[f"{lora}lora_A.default.weight"] = (lora_rank, hidden_size)
            shapes[f"{lora}lora_B.default.weight"] = (hidden_size, lora_rank)
    return shapes


def rotary_buffers(llm_layers: int, head_dim: int) -> dict[str, torch.Tensor]:
    """The LLaMA rotary `inv_freq` of every layer (persistent in the original's LLaMA code)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    return {
        f"llama_model.base_model.model.model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq
        for i in range(llm_layers)
    }


def write_original_checkpoint(
    path, shapes: dict[str, tuple[int, ...]], buffers: dict[str, torch.Tensor], seed: int = 0
) -> dict[str, torch.Tensor]:
    """torch.save an original-layout checkpoint: random float32 trained tensors of `shapes` plus
    `buffers`, beside the other entries the original saves. Returns the trained tensors."""
    rng = np.random.default_rng(seed)
    trained = {
        name: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
        for name, shape in shapes.items()
    }
    optimizer = {  # the form of torch.optim.AdamW.state_dict(), without its (large) moments
        "state": {},
        "param_groups": [{"lr": 3e-5, "betas": (0.9, 0.999), "weight_decay": 0.05, "params": []}],
    }
    torch.save(
        {
            "model": trained | buffers,
            "optimizer": optimizer,
            "config": {"model": {"lora_rank": 8}, "run": {"seed": 42}},
            "scaler": None,
            "epoch": 3,
        },
        path,
    )
    return trained
