"""Writing files and folders so that readers never see half of one, and the one error type for
model files that cannot be read.

Every output of the package goes through `atomic_file` or `atomic_directory`: the work happens
under a temporary sibling name, and a rename within the same folder (atomic on POSIX file
systems) puts it in place only when it is complete. A failure or a kill leaves any previous
output untouched and, at worst, a hidden `.NAME.tmp-*` sibling.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from mats_jax.runtime.errors import InputError


class ModelFileError(InputError):
    """A model or checkpoint file that cannot be used: missing, corrupt, unsupported or not
    matching the model (a missing, unexpected or misshapen parameter)."""


def replace_directory(finished: Path, target: Path) -> None:
    """Moves the complete folder `finished` to `target` (same parent); an old `target` is
    removed only after the swap."""
    if not target.exists():
        os.rename(finished, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    os.rename(target, old)
    os.rename(finished, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty temporary sibling of `path` that replaces `path` only if the block
    succeeds.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the output from other users
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling path of `path` (same suffix, so `np.save` keeps the name)
    that replaces `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
