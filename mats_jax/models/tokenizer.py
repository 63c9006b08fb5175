"""Tokenizers from local files only: a Hugging Face folder, a GGUF file, or a mats_jax
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import transformers

from mats_jax.runtime.fileio import ModelFileError


def load_tokenizer(path: str | Path) -> transformers.PreTrainedTokenizerBase:
    """transformers' tokenizer for `path` (never touches a hub).

    path: a .gguf file (tokenizer read from its metadata), a folder with tokenizer files, or a
    mats_jax checkpoint folder (its `tokenizer/` subfolder).
    """
    path = Path(path)
    if (path / "tokenizer").is_dir():
        path = path / "tokenizer"
    try:
        if path.is_file():
            return transformers.AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: no usable tokenizer ({str(e).splitlines()[0]})") from None
