"""Writing files and folders so that readers never see half of one, that an output never
destroys what was there before, and the one error type for model files that cannot be read.

Every output of the package goes through `atomic_file` or `atomic_directory`: the work happens
under a temporary sibling name, and a rename within the same folder (atomic on POSIX file
systems) puts it in place only when it is complete. A failure or a kill leaves any previous
output untouched and, at worst, a hidden `.NAME.tmp-*` sibling.

What may be replaced:
- a folder only when it does not exist, is empty, or is a previous output of the same command
  (its marker file `MARKER` says so) and the caller passes overwrite=True. Anything else, a
  training workdir or a folder of other files, is refused with an `OutputExistsError` naming
  the folder and what to do, and is never touched;
- a file only when it does not exist, or with overwrite=True; an existing folder never.

Commands call `check_directory` / `check_file` on their outputs before any work, so a refusal
costs nothing; the writers check again before they put the result in place.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from mats_jax.runtime.errors import InputError

# In every folder a command writes: {"command": "...", "written": ISO time}
MARKER = ".mats_jax_output.json"
CHOOSE_ANOTHER = "choose another --out"


class ModelFileError(InputError):
    """A model or checkpoint file that cannot be used: missing, corrupt, unsupported or not
    matching the model (a missing, unexpected or misshapen parameter)."""


class OutputExistsError(FileExistsError):
    """An output path that is taken by something a command may not replace. Commands report it
    as one line (`mats_jax.runtime.cli.INPUT_ERRORS` holds FileExistsError)."""


def output_command(folder: str | os.PathLike) -> str | None:
    """The command whose output `folder` is, as its marker says; None when it has no readable
    marker."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    command = marker.get("command") if isinstance(marker, dict) else None
    return command if isinstance(command, str) else None


def write_marker(folder: str | os.PathLike, command: str) -> None:
    """Marks `folder` as the output of `command`."""
    written = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = json.dumps({"command": command, "written": written}, indent=1) + "\n"
    (Path(folder) / MARKER).write_text(text)


def check_directory(
    path: str | os.PathLike,
    *,
    command: str,
    overwrite: bool = False,
    recognise: Callable[[Path], bool] | None = None,
    hint: str = CHOOSE_ANOTHER,
) -> None:
    """Raises OutputExistsError unless `command` may write the folder `path` (see the module's
    docstring). recognise: accepts an unmarked folder as a previous output of `command` (one
    written before markers existed). hint: what to do when `path` is taken by something else.
    """
    target = Path(path)
    if not os.path.lexists(target):
        return
    if target.is_symlink():  # renaming over it would replace the link, not what it points to
        raise OutputExistsError(f"{target} is a symbolic link; {hint}")
    if not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; {hint}")
    if not any(target.iterdir()):
        return
    marked = output_command(target)
    ours = marked == command or (marked is None and recognise is not None and recognise(target))
    if not ours:
        raise OutputExistsError(f"{target} exists and is not a previous `{command}` output; {hint}")
    if not overwrite:
        raise OutputExistsError(
            f"{target} is a previous `{command}` output; pass --overwrite to replace it"
        )


def check_file(path: str | os.PathLike, *, overwrite: bool = False, hint: str = CHOOSE_ANOTHER):
    """Raises OutputExistsError if `path` is a folder (or another non-file), or is a file and
    `overwrite` is false."""
    target = Path(path)
    if not os.path.lexists(target):
        return
    if target.is_dir() or not target.is_file():
        raise OutputExistsError(f"{target} exists and is not a file; {hint}")
    if not overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")


def replace_directory(finished: Path, target: Path) -> None:
    """Moves the complete folder `finished` to `target` (same parent); an old `target` is
    removed only after the swap. The caller decides whether `target` may go."""
    if not target.exists():
        os.rename(finished, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    os.rename(target, old)
    os.rename(finished, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike,
    *,
    command: str,
    overwrite: bool = False,
    recognise: Callable[[Path], bool] | None = None,
    hint: str = CHOOSE_ANOTHER,
) -> Iterator[Path]:
    """Yields an empty temporary sibling of `path` that becomes `path`, marked as the output of
    `command`, only if the block succeeds.

    `path` must be free, an empty folder, or (with overwrite) a previous output of `command`:
    checked before the block runs and again before the rename (`check_directory`, which
    explains `recognise` and `hint`). On failure the temporary folder, and any parent folder
    created for it, are removed; an old `path` is never touched.
    """
    target = Path(path)
    check = dict(command=command, overwrite=overwrite, recognise=recognise, hint=hint)
    check_directory(target, **check)
    with _parents_removed_on_failure(target):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the output from other users
        try:
            yield tmp
            write_marker(tmp, command)
            check_directory(target, **check)  # nothing else appeared there meanwhile
            if os.path.lexists(target) and any(target.iterdir()):
                replace_directory(tmp, target)
            else:  # absent or empty: rename(2) fails rather than replace a folder filled since
                os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike, *, overwrite: bool = False, hint: str = CHOOSE_ANOTHER
) -> Iterator[Path]:
    """Yields a temporary sibling path of `path` (same suffix, so `np.save` keeps the name)
    that becomes `path` only if the block succeeds. An existing `path` is refused unless it is a
    file and `overwrite` is true (`check_file`, before the block and again before the rename).
    """
    target = Path(path)
    check_file(target, overwrite=overwrite, hint=hint)
    with _parents_removed_on_failure(target):
        tmp = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex}{target.suffix}")
        try:
            yield tmp
            check_file(target, overwrite=overwrite, hint=hint)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _parents_removed_on_failure(target: Path) -> Iterator[None]:
    """Creates the missing parent folders of `target`; removes them again (when still empty) if
    the block fails, so a failed write leaves nothing behind."""
    missing = []
    parent = target.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
