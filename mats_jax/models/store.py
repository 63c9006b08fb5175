"""A converted model as one folder: `mats_jax.json`, orbax `params/` and optional `tokenizer/`.

This is what the converters write and what generation and training start from. Parameters are
flat `{"a.b.c": array}` dicts, stored as the nested tree orbax expects; dtypes (bfloat16
included) are kept exactly. Training checkpoints use orbax's CheckpointManager instead.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mats_jax.runtime.fileio import ModelFileError, atomic_directory

METADATA_FILE = "mats_jax.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
# what a folder written by `save_model` is marked as when the caller names no command
SAVE_COMMAND = "save_model"


def save_model(
    path: str | os.PathLike,
    family: str,
    config: Mapping[str, Any],
    params: Mapping[str, Any],
    tokenizer_dir: str | os.PathLike | None = None,
    *,
    command: str = SAVE_COMMAND,
    overwrite: bool = False,
) -> None:
    """Write the model folder atomically, marked as the output of `command`: it appears only
    once complete, and an existing `path` is replaced only if it is a previous output of
    `command` and `overwrite` is true (see `mats_jax.runtime.fileio.atomic_directory`)."""
    tree = _unflatten({name: np.asarray(value) for name, value in params.items()})
    metadata = json.dumps({"family": family, "config": dict(config)}, indent=2, sort_keys=True)
    with atomic_directory(path, command=command, overwrite=overwrite) as tmp:
        (tmp / METADATA_FILE).write_text(metadata + "\n")
        with ocp.StandardCheckpointer() as checkpointer:  # closing waits for the async save
            checkpointer.save(tmp.absolute() / PARAMS_DIR, tree)
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / TOKENIZER_DIR)


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / METADATA_FILE).is_file()


def read_metadata(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(family, config) of a model folder, without reading its parameters."""
    metadata_file = Path(path) / METADATA_FILE
    try:
        metadata = json.loads(metadata_file.read_text())
        return metadata["family"], metadata["config"]
    except FileNotFoundError as e:
        raise ModelFileError(f"{metadata_file}: missing, not a mats_jax model folder") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{metadata_file}: corrupt ({e!r})") from e


def load_model(
    path: str | os.PathLike, dtype: Any = None
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Return (family, config, flat numpy params); floating params cast to `dtype` if given."""
    folder = Path(path)
    family, config = read_metadata(folder)
    params_dir = folder.absolute() / PARAMS_DIR
    if not params_dir.is_dir():
        raise ModelFileError(f"{params_dir}: missing")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.restore(params_dir)
    except Exception as e:  # orbax and tensorstore raise many types for a damaged checkpoint
        raise ModelFileError(f"{params_dir}: cannot restore ({e})") from e
    params = _flatten(tree)
    if dtype is not None:
        params = {
            name: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
            for name, a in params.items()
        }
    return family, config, params


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"parameter {name!r} lies under another parameter")
        if leaf in node:
            raise ValueError(f"parameter {name!r} is also a prefix of other parameters")
        node[leaf] = value
    return tree


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = np.asarray(value)
    return flat
