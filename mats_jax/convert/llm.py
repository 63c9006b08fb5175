"""Decoder LLMs (LLaMA family, GPT-2) in and out: key maps, loading, import and export.

Formats: a Hugging Face folder (config.json + safetensors or PyTorch bins, sharded or not), a GGUF
file (dequantised), and our own checkpoint folder (`mats_jax.models.store`). A checkpoint keeps
the source's HF config dict, so export writes back exactly what came in.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.convert.gguf_io import read_gguf
from mats_jax.convert.hf_io import read_hf_folder, write_hf_folder
from mats_jax.convert.keymap import KeyMap, Rule, transpose
from mats_jax.models import registry, store
from mats_jax.models.decoder import DecoderLM
from mats_jax.models.params import load_params
from mats_jax.models.tokenizer import has_tokenizer_files, load_tokenizer
from mats_jax.runtime.fileio import ModelFileError, check_directory

COMMAND = "convert llm"  # the marker of the folders import_llm and export_llm write


def llama_keymap(prefix: str = "model.", lm_head: str = "lm_head.") -> KeyMap:
    layer = f"{prefix}layers.*."
    linears = [f"self_attn.{p}_proj" for p in "qkvo"] + [
        f"mlp.{p}_proj" for p in ("gate", "up", "down")
    ]
    rules = [
        Rule(f"{prefix}embed_tokens.weight", "embed_tokens.embedding"),
        Rule(f"{prefix}norm.weight", "norm.scale"),
        Rule(f"{lm_head}weight", "lm_head.kernel", transpose),
    ]
    for name in linears:
        rules += [
            Rule(f"{layer}{name}.weight", f"layers.*.{name}.kernel", transpose),
            Rule(f"{layer}{name}.bias", f"layers.*.{name}.bias"),
            # peft's adapter names, as in MATS checkpoints
            Rule(f"{layer}{name}.lora_A.default.weight", f"layers.*.{name}.lora_a", transpose),
            Rule(f"{layer}{name}.lora_B.default.weight", f"layers.*.{name}.lora_b", transpose),
        ]
    for norm in ("input_layernorm", "post_attention_layernorm"):
        rules.append(Rule(f"{layer}{norm}.weight", f"layers.*.{norm}.scale"))
    return KeyMap(tuple(rules), ignore=(f"{layer}self_attn.rotary_emb.inv_freq",))


def gpt2_keymap(prefix: str = "transformer.") -> KeyMap:
    """GPT-2's Conv1D weights are already [in, out]: every rule is a rename."""
    block = f"{prefix}h.*."
    rules = [
        Rule(f"{prefix}wte.weight", "wte.embedding"),
        Rule(f"{prefix}wpe.weight", "wpe.embedding"),
    ]
    norms = {f"{prefix}ln_f": "ln_f"} | {f"{block}{n}": f"layers.*.{n}" for n in ("ln_1", "ln_2")}
    for src, dst in norms.items():
        rules += [Rule(f"{src}.weight", f"{dst}.scale"), Rule(f"{src}.bias", f"{dst}.bias")]
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        rules += [
            Rule(f"{block}{name}.weight", f"layers.*.{name}.kernel"),
            Rule(f"{block}{name}.bias", f"layers.*.{name}.bias"),
        ]
    # causal-mask buffers, and the LM head that is tied to wte
    return KeyMap(
        tuple(rules), ignore=(f"{block}attn.bias", f"{block}attn.masked_bias", "lm_head.weight")
    )


KEYMAPS: dict[str, KeyMap] = {"llama": llama_keymap(), "gpt2": gpt2_keymap()}  # by registry family


def torch_to_flax(
    family: str, hf_config: dict[str, Any], tensors: dict[str, np.ndarray], source: str
) -> dict[str, np.ndarray]:
    """HF-named tensors -> flat Flax params (a tied LM head is dropped: it is the embedding)."""
    if hf_config.get("tie_word_embeddings", family == "gpt2"):
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    return KEYMAPS[family].to_flax(tensors, source)


def build_loaded(
    family: str,
    hf_config: dict[str, Any],
    params: dict[str, np.ndarray],
    *,
    source: str,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
) -> DecoderLM:
    """A model of `family` holding `params`; a missing, extra or misshapen key is an error."""
    model = nnx.eval_shape(
        lambda: registry.build_model(family, hf_config, dtype=dtype, param_dtype=param_dtype)
    )
    try:
        load_params(model, params, source)
    except ValueError as e:
        raise ModelFileError(str(e)) from None
    return model


def from_torch_state(
    family: str, hf_config: dict[str, Any], tensors: dict[str, np.ndarray], *, source: str, **dtypes
) -> DecoderLM:
    """Build a model from a PyTorch state dict (HF names, numpy arrays)."""
    return build_loaded(
        family,
        hf_config,
        torch_to_flax(family, hf_config, tensors, source),
        source=source,
        **dtypes,
    )


def read_source(path: str | Path) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """(family, HF config dict, flat Flax params) of a GGUF file, HF folder or mats_jax
    checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or folder")
    if store.is_model_folder(path):
        return store.load_model(path)
    hf_config, tensors = read_gguf(path) if path.is_file() else read_hf_folder(path, dtype=None)
    family = registry.of_hf_config(hf_config, str(path)).name
    return family, hf_config, torch_to_flax(family, hf_config, tensors, str(path))


def load_llm(path: str | Path, *, dtype=jnp.float32, param_dtype=jnp.float32) -> DecoderLM:
    """A ready model from any supported source (see `read_source`)."""
    family, hf_config, params = read_source(path)
    return build_loaded(
        family, hf_config, params, source=str(path), dtype=dtype, param_dtype=param_dtype
    )


def resize_vocab(params: dict[str, np.ndarray], vocab_size: int) -> dict[str, np.ndarray]:
    """Grow the embedding (and untied LM head) to `vocab_size`, new rows = mean of the old ones.

    Vicuna + "[PAD]" needs 32001 rows; the mean keeps the new token's logit unremarkable.
    """
    params = dict(params)
    for key, axis in (("embed_tokens.embedding", 0), ("wte.embedding", 0), ("lm_head.kernel", 1)):
        if key not in params:
            continue
        table = params[key]
        extra = vocab_size - table.shape[axis]
        if extra < 0:
            raise ModelFileError(f"cannot shrink {key} from {table.shape[axis]} to {vocab_size}")
        mean = table.astype(np.float32).mean(axis=axis, keepdims=True).astype(table.dtype)
        params[key] = np.concatenate([table, np.repeat(mean, extra, axis=axis)], axis=axis)
    return params


def import_llm(
    source: str | Path,
    out: str | Path,
    *,
    add_pad_token: str | None = None,
    command: str = COMMAND,
    overwrite: bool = False,
) -> None:
    """HF folder or GGUF -> mats_jax checkpoint folder, with the tokenizer beside it if there is
    one. An existing `out` is refused before anything is read, unless it is a previous output
    of `command` and `overwrite` is true (see `mats_jax.runtime.fileio.atomic_directory`).
    """
    check_directory(out, command=command, overwrite=overwrite)
    family, hf_config, params = read_source(source)
    try:
        tokenizer = load_tokenizer(source)
    except ModelFileError:
        # A fast tokenizer or a SentencePiece tokenizer.model (Vicuna) is saved in fast form:
        # the checkpoint's tokenizer/ loads without sentencepiece. Unreadable files are an error.
        if add_pad_token or has_tokenizer_files(source):
            raise
        logging.warning("%s has no tokenizer files; the checkpoint will have none", source)
        tokenizer = None
    if add_pad_token:
        tokenizer.add_special_tokens({"pad_token": add_pad_token})
        hf_config = {**hf_config, "pad_token_id": tokenizer.pad_token_id}
        if len(tokenizer) > hf_config["vocab_size"]:
            params = resize_vocab(params, len(tokenizer))
            hf_config = {**hf_config, "vocab_size": len(tokenizer)}
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        if tokenizer is not None:
            tokenizer.save_pretrained(tokenizer_dir)
        store.save_model(
            out,
            family,
            hf_config,
            params,
            tokenizer_dir=tokenizer_dir if tokenizer is not None else None,
            command=command,
            overwrite=overwrite,
        )


def export_llm(
    source: str | Path, out: str | Path, *, command: str = COMMAND, overwrite: bool = False
) -> None:
    """mats_jax checkpoint folder -> HF folder (config.json, safetensors, tokenizer files). An
    existing `out` is refused as in `import_llm`."""
    check_directory(out, command=command, overwrite=overwrite)
    family, hf_config, params = store.load_model(source)
    tensors = KEYMAPS[family].to_torch(params)
    tokenizer_dir = Path(source) / store.TOKENIZER_DIR
    write_hf_folder(
        out,
        hf_config,
        tensors,
        tokenizer_dir=tokenizer_dir if tokenizer_dir.is_dir() else None,
        command=command,
        overwrite=overwrite,
    )
