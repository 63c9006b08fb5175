"""Key map of the original MATS checkpoint (`ckpt['model']`, DESIGN §2.6).

It holds only the trainable parts: the mapper (`audio_mapper.*`), the projector
(`audio_llama_proj.*`) and the LLM's LoRA adapters in peft naming. Known leftovers (`ln_audio.*`,
rotary `inv_freq`, BatchNorm statistics, GPT-2 mask buffers) are skipped; anything else is an error.
"""

from __future__ import annotations

from mats_jax.convert.keymap import KeyMap, Rule, transpose
from mats_jax.convert.llm import llama_keymap

LLAMA_PREFIX = "llama_model.base_model.model.model."


def mapper_keymap(torch_prefix: str = "audio_mapper.", flax_prefix: str = "mapper.") -> KeyMap:
    t, f = torch_prefix, flax_prefix
    block, ours = f"{t}transformer.layers.*.", f"{f}layers.*."
    rules = [Rule(f"{t}linear.weight", f"{f}linear.kernel", transpose),
             Rule(f"{t}linear.bias", f"{f}linear.bias"),
             Rule(f"{t}prefix_const", f"{f}prefix_const")]
    for norm in ("norm1", "norm2"):
        rules += [Rule(f"{block}{norm}.weight", f"{ours}{norm}.scale"),
                  Rule(f"{block}{norm}.bias", f"{ours}{norm}.bias")]
    for linear in ("attn.to_queries", "attn.to_keys_values", "attn.project", "mlp.fc1", "mlp.fc2"):
        rules += [Rule(f"{block}{linear}.weight", f"{ours}{linear}.kernel", transpose),
                  Rule(f"{block}{linear}.bias", f"{ours}{linear}.bias")]
    return KeyMap(tuple(rules))


def mats_keymap() -> KeyMap:
    projector = KeyMap((Rule("audio_llama_proj.weight", "projector.kernel", transpose),
                        Rule("audio_llama_proj.bias", "projector.bias")))
    llm = llama_keymap(prefix=LLAMA_PREFIX).nest("llm.")
    leftovers = KeyMap((), ignore=("ln_audio.weight", "ln_audio.bias"))
    return mapper_keymap() + projector + llm + leftovers
