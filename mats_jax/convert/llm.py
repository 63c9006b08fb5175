"""Key maps and model construction for the decoder LLMs (LLaMA family, GPT-2)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from mats_jax.convert.errors import ConversionError
from mats_jax.convert.keymap import KeyMap, Rule, transpose
from mats_jax.models.decoder import DecoderLM
from mats_jax.models.gpt2 import GPT2, GPT2Config
from mats_jax.models.llama import Llama, LlamaConfig
from mats_jax.state import load_params


def llama_keymap(prefix: str = "model.", lm_head: str = "lm_head.") -> KeyMap:
    layer = f"{prefix}layers.*."
    linears = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    rules = [Rule(f"{prefix}embed_tokens.weight", "embed_tokens.embedding"),
             Rule(f"{prefix}norm.weight", "norm.scale"),
             Rule(f"{lm_head}weight", "lm_head.kernel", transpose)]
    for name in linears:
        rules += [Rule(f"{layer}{name}.weight", f"layers.*.{name}.kernel", transpose),
                  Rule(f"{layer}{name}.bias", f"layers.*.{name}.bias"),
                  # peft's adapter names, as in MATS checkpoints
                  Rule(f"{layer}{name}.lora_A.default.weight", f"layers.*.{name}.lora_a", transpose),
                  Rule(f"{layer}{name}.lora_B.default.weight", f"layers.*.{name}.lora_b", transpose)]
    for norm in ("input_layernorm", "post_attention_layernorm"):
        rules.append(Rule(f"{layer}{norm}.weight", f"layers.*.{norm}.scale"))
    return KeyMap(tuple(rules), ignore=(f"{layer}self_attn.rotary_emb.inv_freq",))


def gpt2_keymap(prefix: str = "transformer.") -> KeyMap:
    """GPT-2's Conv1D weights are already [in, out]: every rule is a rename."""
    block = f"{prefix}h.*."
    rules = [Rule(f"{prefix}wte.weight", "wte.embedding"), Rule(f"{prefix}wpe.weight", "wpe.embedding")]
    norms = {f"{prefix}ln_f": "ln_f"} | {f"{block}{n}": f"layers.*.{n}" for n in ("ln_1", "ln_2")}
    for src, dst in norms.items():
        rules += [Rule(f"{src}.weight", f"{dst}.scale"), Rule(f"{src}.bias", f"{dst}.bias")]
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        rules += [Rule(f"{block}{name}.weight", f"layers.*.{name}.kernel"),
                  Rule(f"{block}{name}.bias", f"layers.*.{name}.bias")]
    # causal-mask buffers, and the LM head that is tied to wte
    return KeyMap(tuple(rules), ignore=(f"{block}attn.bias", f"{block}attn.masked_bias", "lm_head.weight"))


FAMILIES: dict[str, tuple[type, type[DecoderLM], KeyMap]] = {
    "llama": (LlamaConfig, Llama, llama_keymap()),
    "gpt2": (GPT2Config, GPT2, gpt2_keymap()),
}


def family_of(hf_config: dict[str, Any], source: str) -> str:
    model_type = hf_config.get("model_type")
    family = {"llama": "llama", "mistral": "llama", "gpt2": "gpt2"}.get(model_type)
    if family is None:
        raise ConversionError(f"{source}: model_type {model_type!r} is not supported (llama, gpt2)")
    return family


def build_model(family: str, hf_config: dict[str, Any], *, dtype=jnp.float32,
                param_dtype=jnp.float32, seed: int = 0) -> DecoderLM:
    """A randomly initialised model of `family` for a Hugging Face config dict."""
    config_cls, model_cls, _ = FAMILIES[family]
    return model_cls(config_cls.from_hf(hf_config), dtype=dtype, param_dtype=param_dtype,
                     rngs=nnx.Rngs(seed))


def from_torch_state(family: str, hf_config: dict[str, Any], tensors: dict, *, source: str,
                     dtype=jnp.float32, param_dtype=jnp.float32) -> DecoderLM:
    """Build a model and load a PyTorch state dict (HF names, numpy arrays) into it."""
    model = build_model(family, hf_config, dtype=dtype, param_dtype=param_dtype)
    if hf_config.get("tie_word_embeddings", family == "gpt2"):
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    try:
        load_params(model, FAMILIES[family][2].to_flax(tensors, source), source)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    return model
