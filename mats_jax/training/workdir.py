"""A training run's folder, as the trainer leaves it and everything after it reads it:

    config.json    the run's config (versioned: `mats_jax.config.read_json` migrates older ones)
    checkpoints/   orbax checkpoints of the train state and the data position, by step
    memory_bank/   Santa's bank (python -m mats_jax.memory_bank)
    corpus/        the prepared corpus, when the run used the shipped one
    metrics.jsonl, tensorboard/, eval/

Listening and export need only the trained weights: `restore_weights` reads them without the
optimiser state, so they never build an optimiser.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
from flax import nnx

from mats_jax.config import read_json, write_json
from mats_jax.training.checkpoints import Checkpoints

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
BANK_FOLDER = "memory_bank"


def read_config(workdir: Path) -> ml_collections.ConfigDict:
    return read_json(Path(workdir) / CONFIG_FILE)


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    write_json(config, Path(workdir) / CONFIG_FILE)


def checkpoints(workdir: Path, config: ml_collections.ConfigDict) -> Checkpoints:
    return Checkpoints(Path(workdir) / CHECKPOINTS, keep=config.train.keep_checkpoints)


def restore_weights(
    workdir: Path,
    config: ml_collections.ConfigDict,
    step: int | None,
    trainable: nnx.State,
    rngs: nnx.State,
) -> tuple[int, nnx.State, nnx.State]:
    """(step, trainable, rngs) of checkpoint `step` (default: the latest), laid out like the
    given abstract states."""
    manager = checkpoints(workdir, config)
    try:
        step = step if step is not None else manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{Path(workdir) / CHECKPOINTS}: no checkpoint")
        return (step, *manager.restore_weights(step, trainable, rngs))
    finally:
        manager.close()
