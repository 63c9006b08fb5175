"""Read and write Hugging Face model folders (`config.json` + safetensors or PyTorch `.bin`).

Safetensors is read and written here with numpy alone: the `safetensors` package's numpy API has
no bfloat16, and the format (8-byte header length, JSON header, raw little-endian bytes) is small.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from mats_jax.runtime.fileio import ModelFileError, atomic_directory

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # what `transformers` uses ("5GB")
_MAX_HEADER_BYTES = 100 * 2**20  # the `safetensors` library's own limit

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dt)
    for name, dt in {
        "F64": np.float64,
        "F32": np.float32,
        "F16": np.float16,
        "BF16": ml_dtypes.bfloat16,
        "F8_E4M3": ml_dtypes.float8_e4m3fn,
        "F8_E5M2": ml_dtypes.float8_e5m2,
        "I64": np.int64,
        "I32": np.int32,
        "I16": np.int16,
        "I8": np.int8,
        "U64": np.uint64,
        "U32": np.uint32,
        "U16": np.uint16,
        "U8": np.uint8,
        "BOOL": np.bool_,
    }.items()
}
_SAFETENSORS_NAMES = {dt: name for name, dt in _SAFETENSORS_DTYPES.items()}
_FLOAT_DTYPES = {
    _SAFETENSORS_DTYPES[n] for n in ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
}

# (single file, sharded index) pairs, in the order transformers prefers them.
_WEIGHT_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


def read_hf_folder(
    path: str | os.PathLike, dtype: Any = np.float32
) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (config.json as a dict, tensors by HF name) of a local HF model folder.

    Floating-point tensors are cast to `dtype` (float32 by default, so bfloat16 checkpoints become
    plain numpy); `dtype=None` keeps the stored dtype, with bfloat16 as `ml_dtypes.bfloat16`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"{folder}: no such model folder")
    config = _read_json(folder / "config.json")
    tensors: dict[str, np.ndarray] = {}
    for file in _weight_files(folder):
        if file.suffix == ".safetensors":
            tensors.update(read_safetensors(file, dtype))
        else:
            tensors.update(read_torch_state(file, dtype=dtype))
    return config, tensors


def write_hf_folder(
    path: str | os.PathLike,
    config: Mapping,
    tensors: Mapping[str, np.ndarray],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    tokenizer_dir: str | os.PathLike | None = None,
    *,
    command: str = "write_hf_folder",
    overwrite: bool = False,
) -> None:
    """Write `config.json` and safetensors weights, sharded with an index above `max_shard_bytes`,
    plus the files of `tokenizer_dir` if given.

    The folder appears whole or not at all, marked as the output of `command`; an existing one
    is replaced only if it is a previous output of `command` and `overwrite` is true (see
    `atomic_directory`). Dtypes are kept as given.
    """
    shards = _split_shards({k: np.asarray(v) for k, v in tensors.items()}, max_shard_bytes)
    with atomic_directory(path, command=command, overwrite=overwrite) as tmp:
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp, dirs_exist_ok=True)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if len(shards) == 1:
            write_safetensors(tmp / "model.safetensors", shards[0])
            return
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(tmp / name, shard)
            weight_map.update(dict.fromkeys(shard, name))
        index = {
            "metadata": {"total_size": sum(a.nbytes for s in shards for a in s.values())},
            "weight_map": weight_map,
        }
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def read_safetensors(path: str | os.PathLike, dtype: Any = None) -> dict[str, np.ndarray]:
    """Tensors of one safetensors file; floating ones cast to `dtype` unless it is None."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > _MAX_HEADER_BYTES:
                raise ValueError(f"header of {header_len} bytes")
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        size = max((info["data_offsets"][1] for info in header.values()), default=0)
        data = np.empty(0, np.uint8)  # numpy cannot map zero bytes
        if size:
            data = np.memmap(path, np.uint8, "r", 8 + header_len, (size,))
        tensors = {}
        for name, info in header.items():
            begin, end = info["data_offsets"]
            stored = data[begin:end].view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
            tensors[name] = _cast(stored, dtype) if dtype is not None else np.array(stored)
        return tensors
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from e


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write one safetensors file that `safetensors`/`transformers` load (format "pt")."""
    arrays = {name: np.asarray(a, order="C") for name, a in tensors.items()}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, a in arrays.items():
        if a.dtype not in _SAFETENSORS_NAMES:
            raise ModelFileError(f"{path}: tensor {name!r} has dtype {a.dtype}, not storable")
        header[name] = {
            "dtype": _SAFETENSORS_NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for a in arrays.values():
            f.write(a.reshape(-1).view(np.uint8))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ModelFileError(f"{path}: missing") from e
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not readable JSON ({e})") from e


def _weight_files(folder: Path) -> list[Path]:
    for single, index in _WEIGHT_LAYOUTS:
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            weight_map = _read_json(folder / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ModelFileError(f"{folder / index}: no weight_map")
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            for file in files:
                if not file.is_file():
                    raise ModelFileError(f"{file}: shard listed in {index} is missing")
            return files
    names = ", ".join(name for pair in _WEIGHT_LAYOUTS for name in pair)
    raise ModelFileError(f"{folder}: no weights (looked for {names})")


def read_torch_state(
    path: str | os.PathLike, *, key: str | None = None, dtype: Any = None
) -> dict[str, np.ndarray]:
    """A PyTorch state dict file (or its entry `key`, e.g. "model" of an msclap or MATS .pth) as
    numpy; loaded with weights_only=True, so no code from the file runs."""
    import torch  # only PyTorch files need torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            f"{path}: cannot be read by torch.load(weights_only=True): {first}"
        ) from None
    if key is not None:
        if not isinstance(state, Mapping) or not isinstance(state.get(key), Mapping):
            found = sorted(state)[:5] if isinstance(state, Mapping) else type(state).__name__
            raise ModelFileError(f"{path}: no {key!r} state dict (found {found})")
        state = state[key]
    if not isinstance(state, Mapping):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, not a state dict")
    tensors = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise ModelFileError(f"{path}: entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
            a = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            a = t.numpy()
        tensors[name] = _cast(a, dtype) if dtype is not None else a
    return tensors


def _cast(a: np.ndarray, dtype: Any) -> np.ndarray:
    """A copy of `a`, cast to `dtype` if it is floating point (integer tensors keep theirs)."""
    return a.astype(dtype) if a.dtype in _FLOAT_DTYPES else np.array(a)


def _split_shards(
    tensors: dict[str, np.ndarray], max_shard_bytes: int
) -> list[dict[str, np.ndarray]]:
    """Greedy split in key order, like transformers; a tensor over the limit gets its own shard."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, a in tensors.items():
        if shards[-1] and size + a.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = a
        size += a.nbytes
    return shards
