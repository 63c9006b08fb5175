"""Tokenizers from local files only: a Hugging Face folder, a GGUF file, or a mats_jax
checkpoint.

A folder may hold a fast tokenizer (`tokenizer.json`) or only a SentencePiece model
(`tokenizer.model`, as Vicuna and the original LLaMA ship it); transformers converts the latter,
which needs the `sentencepiece` and `protobuf` packages. A converted checkpoint's `tokenizer/`
is always saved in the fast form, so it loads without them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import transformers

from mats_jax.runtime.fileio import ModelFileError

FAST_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
# files any transformers tokenizer folder has at least one of
TOKENIZER_FILES = (
    FAST_FILE,
    SENTENCEPIECE_FILE,
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
# (package, module) a SentencePiece-only folder needs
SENTENCEPIECE_PACKAGES = (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))


def has_tokenizer_files(path: str | Path) -> bool:
    """Whether `path` (a folder, or a checkpoint with `tokenizer/`) holds tokenizer files."""
    folder = _folder(Path(path))
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(path: str | Path) -> transformers.PreTrainedTokenizerBase:
    """transformers' tokenizer for `path` (never touches a hub).

    path: a .gguf file (tokenizer read from its metadata), a folder with tokenizer files (a fast
    `tokenizer.json`, or a SentencePiece `tokenizer.model`), or a mats_jax checkpoint folder
    (its `tokenizer/` subfolder).
    """
    path = _folder(Path(path))
    if path.is_dir():
        _check_sentencepiece(path)
    try:
        if path.is_file():
            return transformers.AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: no usable tokenizer ({str(e).splitlines()[0]})") from None


def _folder(path: Path) -> Path:
    return path / "tokenizer" if (path / "tokenizer").is_dir() else path


def _check_sentencepiece(folder: Path) -> None:
    """A SentencePiece-only folder without the packages that read it: say which to install
    (transformers would fall back to other readers and fail obscurely)."""
    if not (folder / SENTENCEPIECE_FILE).is_file() or (folder / FAST_FILE).is_file():
        return
    missing = [package for package, module in SENTENCEPIECE_PACKAGES if not _importable(module)]
    if missing:
        raise ModelFileError(
            f"{folder}: the tokenizer is a SentencePiece {SENTENCEPIECE_FILE} without "
            f"{FAST_FILE}, and reading it needs the package(s) {', '.join(missing)} "
            "(pip install -r requirements.txt)"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
