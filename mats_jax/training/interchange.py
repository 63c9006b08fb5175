"""A workdir to and from the original code's checkpoints, and out to a PEFT adapter.

`import_mats` turns an original MATS checkpoint into a workdir (what the trainer writes), so
generation and evaluation treat it like a run of ours, and fine-tuning starts a new run from it
(`train.init_from`: the workdir is marked as an import, never resumed); `export_mats` goes back, bit
for bit, and `export_peft` writes the Hugging Face PEFT form (`python -m mats_jax.export`).
Import and export read only the trained weights: no LLM weights are loaded or made (the
config's LLM architecture gives the shapes), and export reads no optimiser state.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from mats_jax.config import json_text
from mats_jax.convert.mats import (
    PEFT_COMMAND,
    mats_keymap,
    read_original,
    write_original,
    write_peft,
)
from mats_jax.mats.build import (
    abstract_mats,
    check_llm,
    initial_rngs,
    llm_architecture,
    llm_source,
)
from mats_jax.mats.model import TRAINABLE
from mats_jax.models.params import load_params
from mats_jax.runtime.fileio import ModelFileError, check_directory, check_file
from mats_jax.training import optim, steps
from mats_jax.training import workdir as workdirs


def import_mats(source: str | Path, config: ml_collections.ConfigDict, workdir: str | Path) -> None:
    """Original MATS checkpoint -> a workdir (config.json + checkpoint 0 + import.json, the mark
    of an import naming `source`) that `Listener.from_workdir` reads and `train.init_from` starts
    a new run from. Every trainable parameter must be present, at
    the shapes of the config's LLM architecture (`llm_architecture`: a checkpoint's metadata, else
    `llm.architecture`); the LLM's weights are neither read nor made. A given `llm.checkpoint`
    must be of the declared architecture (`check_llm`), as generating will require.
    """
    if config.llm.checkpoint:
        check_llm(config)
    params = mats_keymap().to_flax(read_original(source), str(source))
    model = abstract_mats(config)  # shapes only: the trained arrays are loaded into it
    load_params(model, params, str(source), kind=TRAINABLE)
    tx, _ = optim.from_config(config.train)
    state = steps.init_state(nnx.state(model, TRAINABLE), initial_rngs(config), tx)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdirs.write_config(workdir, config)
    record = {"source": str(Path(source).absolute()), "command": workdirs.IMPORT_COMMAND}
    (workdir / workdirs.IMPORT_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    checkpoints = workdirs.checkpoints(workdir, config, writer=True)
    checkpoints.save(0, state)
    checkpoints.wait()
    checkpoints.close()


def trainable_tensors(
    workdir: str | Path, step: int | None = None
) -> tuple[dict[str, np.ndarray], ml_collections.ConfigDict]:
    """(a workdir's trainable parameters under the original checkpoint's keys, its config)."""
    config = workdirs.read_config(Path(workdir))
    family, _ = llm_architecture(config)
    if family != "llama":
        raise ModelFileError(
            f"{workdir}: the original MATS layout holds LLaMA-family LLMs, not {family!r}"
        )
    _, trainable, rngs, _ = steps.split(abstract_mats(config))
    _, trainable, _ = workdirs.restore_weights(Path(workdir), config, step, trainable, rngs)
    arrays = {".".join(map(str, path)): np.asarray(v) for path, v in nnx.to_flat_state(trainable)}
    return mats_keymap().to_torch(arrays), config


def export_mats(
    workdir: str | Path, out: str | Path, step: int | None = None, *, overwrite: bool = False
) -> None:
    """A workdir's trainable parameters -> an original-layout `{'model': state_dict}` .pth. An
    existing `out` is refused (before anything is read) unless it is a file and `overwrite`."""
    check_file(out, overwrite=overwrite)
    write_original(trainable_tensors(workdir, step)[0], out, overwrite=overwrite)


def export_peft(
    workdir: str | Path, out: str | Path, step: int | None = None, *, overwrite: bool = False
) -> None:
    """A workdir -> a PEFT LoRA adapter folder, the mapper and projector in
    `mapper.safetensors` (original keys), and the training `config.json`. An existing `out` is
    refused (before anything is read) unless it is a previous PEFT export and `overwrite`."""
    check_directory(out, command=PEFT_COMMAND, overwrite=overwrite)
    tensors, config = trainable_tensors(workdir, step)
    write_peft(
        tensors,
        config.lora.to_dict(),
        str(llm_source(config)),
        out,
        extra_files={workdirs.CONFIG_FILE: json_text(config)},
        command=PEFT_COMMAND,
        overwrite=overwrite,
    )


EXPORTERS = {"mats-torch": export_mats, "hf-peft": export_peft}
