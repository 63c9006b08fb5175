"""Key map of the original MATS checkpoint (`ckpt['model']`, DESIGN §2.6).

It holds only the trainable parts: the mapper (`audio_mapper.*`), the projector
(`audio_llama_proj.*`) and the LLM's LoRA adapters in peft naming. Known leftovers (`ln_audio.*`,
rotary `inv_freq`, BatchNorm statistics, GPT-2 mask buffers) are skipped; anything else is an error.

`import_mats` turns such a checkpoint into a workdir (what the trainer writes), so generation,
evaluation and fine-tuning treat it like a run of ours; `export_mats` goes back, and `export_peft`
writes the Hugging Face PEFT form (`python -m mats_jax.export`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from mats_jax.convert.errors import ConversionError
from mats_jax.convert.hf_io import atomic_directory, read_torch_state, write_safetensors
from mats_jax.convert.keymap import KeyMap, Rule, transpose
from mats_jax.convert.llm import llama_keymap
from mats_jax.embedded import smollm2_gguf_path
from mats_jax.state import load_params

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


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """`get_config()` of a config file (configs/*.py), as `--config=` would load it."""
    spec = importlib.util.spec_from_file_location("mats_config", path)
    if spec is None or not Path(path).is_file():
        raise ConversionError(f"{path}: no such config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def read_original(path: str | Path) -> dict[str, np.ndarray]:
    """`ckpt['model']` of an original MATS checkpoint, as float32 numpy (weights_only: no code runs)."""
    return read_torch_state(path, key="model", dtype=np.float32)


def import_mats(source: str | Path, config: ml_collections.ConfigDict, workdir: str | Path) -> None:
    """Original MATS checkpoint -> a workdir (config.json + checkpoint 0) that `Listener.from_workdir`
    and the trainer (fine-tuning from it) read. Every trainable parameter must be present."""
    from mats_jax import checkpointing, optim, train_step
    from mats_jax.model_setup import build_mats
    from mats_jax.models.mats import TRAINABLE

    params = mats_keymap().to_flax(read_original(source), str(source))
    model, _ = build_mats(config)
    try:
        load_params(model, params, str(source), kind=TRAINABLE)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    tx, _ = optim.from_config(config.train)
    state = train_step.init_state(nnx.state(model, TRAINABLE), nnx.state(model, nnx.RngState), tx)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    checkpoints = checkpointing.Checkpoints(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    checkpoints.save(0, state)
    checkpoints.wait()
    checkpoints.close()


def trainable_tensors(workdir: str | Path, step: int | None = None
                      ) -> tuple[dict[str, np.ndarray], ml_collections.ConfigDict]:
    """(a workdir's trainable parameters under the original checkpoint's keys, its config)."""
    from mats_jax.listen import Listener
    from mats_jax.models.llama import Llama
    from mats_jax.models.mats import TRAINABLE

    listener = Listener.from_workdir(workdir, step=step, load_clap=False)
    if not isinstance(listener.model.llm, Llama):
        raise ConversionError(f"{workdir}: the original MATS layout holds LLaMA-family LLMs, "
                              f"not {type(listener.model.llm).__name__}")
    arrays = {".".join(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(listener.model, TRAINABLE))}
    config = ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))
    return mats_keymap().to_torch(arrays), config


def export_mats(workdir: str | Path, out: str | Path, step: int | None = None) -> None:
    """A workdir's trainable parameters -> an original-layout `{'model': state_dict}` .pth, which
    the original code loads."""
    import torch

    tensors, _ = trainable_tensors(workdir, step)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"model": {k: torch.from_numpy(np.array(v, copy=True)) for k, v in tensors.items()}}, tmp)
    os.replace(tmp, out)


def export_peft(workdir: str | Path, out: str | Path, step: int | None = None) -> None:
    """A workdir -> a folder with a PEFT LoRA adapter for the LLM (`adapter_config.json`,
    `adapter_model.safetensors`: `PeftModel.from_pretrained(base, out)` loads it), the mapper and
    projector in `mapper.safetensors` (original keys), and the training `config.json`."""
    tensors, config = trainable_tensors(workdir, step)
    llm_prefix = "llama_model."
    adapter = {k.removeprefix(llm_prefix).replace(".default.", "."): v
               for k, v in tensors.items() if k.startswith(llm_prefix)}
    bridge = {k: v for k, v in tensors.items() if not k.startswith(llm_prefix)}
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.lora.rank, "lora_alpha": config.lora.alpha,
        "lora_dropout": config.lora.dropout, "target_modules": sorted(config.lora.targets), "bias": "none",
        "base_model_name_or_path": config.llm.checkpoint or str(smollm2_gguf_path()),
        "fan_in_fan_out": False, "inference_mode": True,
    }
    with atomic_directory(out) as folder:
        write_safetensors(folder / "adapter_model.safetensors", adapter)
        write_safetensors(folder / "mapper.safetensors", bridge)
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
        (folder / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")


EXPORTERS = {"mats-torch": export_mats, "hf-peft": export_peft}
