"""Training checkpoints: orbax CheckpointManager (async, keep-N, atomic) with the data iterator.

A checkpoint at step s holds the train state *after* s updates and the data iterator positioned
at the batch of update s+1, so restarting with the same workdir continues the exact run.

With several processes every call here is collective: each process writes the shards of the
arrays its devices hold, process 0 writes the iterator state (plain JSON, the same in every
process: the pipeline's position does not depend on the number of processes) and commits the
step. Restoring lays the arrays out like the target, so a checkpoint written by two processes on
four devices restores onto one process and one device, or onto a pod.

A new run may start from another's trainable weights (`restore_trainable`, `train.init_from`):
a run's checkpoint, or an import (`python -m mats_jax.convert mats`), which holds no data
position and is never resumed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from mats_jax.data.pipeline import CorpusIterator
from mats_jax.runtime import distributed
from mats_jax.runtime.errors import RunError
from mats_jax.runtime.fileio import ModelFileError


class Checkpoints:
    """A run's checkpoints. A save is written under a temporary name and renamed into place when
    complete, so a process killed mid-save leaves no checkpoint that looks whole (its temporary
    folder is cleaned up by the next run); `restore_newest` steps back past a damaged one."""

    def __init__(self, directory: str | Path, *, keep: int, writer: bool = False):
        """writer: the one trainer of the run (it removes what a killed save left behind);
        readers (listening, export) open the checkpoints read-only."""
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=writer,
            enable_async_checkpointing=True,
            cleanup_tmp_directories=writer,
            read_only=not writer,
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator: CorpusIterator | None = None) -> None:
        """Start an async save of `state` (device arrays are copied first, so training goes on);
        a previous save that failed in the background is a RunError here."""
        self._raise_if_a_save_failed()
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = ocp.args.JsonSave(data_iterator.get_state())
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, target, data_iterator: CorpusIterator | None = None):
        """The state at `step`, laid out like `target` (arrays or ShapeDtypeStructs with
        shardings: a checkpoint restores onto any mesh); `data_iterator`, if given, is
        repositioned in place (inference restores the state alone)."""
        items = {
            "state": ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
        }
        if data_iterator is not None:
            items["data"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if data_iterator is not None:
            data_iterator.set_state(restored.data)
        return restored.state

    def restore_newest(
        self, target, data_iterator: CorpusIterator | None = None, *, damaged_to: Path | None = None
    ) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that restores (see `restore`), or (None,
        target) when there is none. A checkpoint that cannot be restored (a truncated array
        file, a missing item) is reported and skipped; with `damaged_to` it is also moved there,
        so that the run can write that step again."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return step, self.restore(step, target, data_iterator)
            except Exception as e:  # orbax and tensorstore raise many types for a damaged file
                self._say_unrestorable(step, e)
                if damaged_to is not None:
                    if distributed.is_process_zero():
                        damaged_to.mkdir(parents=True, exist_ok=True)
                        os.rename(
                            self.directory / str(step), damaged_to / f"{step}-{time.time_ns()}"
                        )
                    distributed.barrier("damaged checkpoint moved aside")
                    self.manager.reload()
        return None, target

    def restore_weights(
        self, step: int | None, trainable: nnx.State, rngs: nnx.State
    ) -> tuple[int, nnx.State, nnx.State]:
        """(step, trainable, rngs) of the state at `step`, laid out like the given (abstract)
        ones, and nothing else: no optimiser state is read, so no optimiser need exist. With
        step None: the newest checkpoint that restores (a damaged one is reported and skipped)."""
        if step is not None:
            return (step, *self._restore_weights(step, trainable, rngs))
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"{self.directory}: no checkpoint")
        for step in steps:
            try:
                restored = self._restore_weights(step, trainable, rngs)
            except Exception as e:  # orbax and tensorstore raise many types for a damaged file
                self._say_unrestorable(step, e)
                continue
            if step != steps[0]:
                print(f"using checkpoint {self.directory / str(step)}", file=sys.stderr)
            return (step, *restored)
        raise ModelFileError(f"{self.directory}: no checkpoint could be restored")

    def restore_trainable(self, step: int, trainable: nnx.State) -> nnx.State:
        """The trainable parameters of checkpoint `step` alone (no RNG or optimiser state: a new
        run's start, `train.init_from`), laid out like `trainable`. A parameter the checkpoint
        lacks, or holds at another shape, is a ModelFileError naming it."""
        where = self.directory / str(step)
        saved = ocp.StandardCheckpointer().metadata(where / "state").item_metadata.tree
        shapes = {  # orbax names a Variable's array NAME.value
            m.name.removeprefix("trainable.").removesuffix(".value"): m.shape
            for m in jax.tree.leaves(saved["trainable"])
        }
        for path, value in nnx.to_flat_state(trainable):
            name = ".".join(map(str, path))
            if name not in shapes:
                raise ModelFileError(f"{where} has no parameter {name}: another model")
            if tuple(shapes[name]) != tuple(value.shape):
                raise ModelFileError(
                    f"{where} holds {name} of shape {tuple(shapes[name])}, this run's model "
                    f"needs {tuple(value.shape)}"
                )
        return self._restore_partial(step, {"trainable": trainable})["trainable"]

    def _restore_weights(
        self, step: int, trainable: nnx.State, rngs: nnx.State
    ) -> tuple[nnx.State, nnx.State]:
        restored = self._restore_partial(step, {"trainable": trainable, "rngs": rngs})
        return restored["trainable"], restored["rngs"]

    def _restore_partial(self, step: int, target: dict[str, Any]) -> dict[str, Any]:
        """Those parts of checkpoint `step`'s state that `target` names, laid out like it."""
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = ocp.args.PyTreeRestore(
            target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True,
        )
        return self.manager.restore(step, args=ocp.args.Composite(state=args)).state

    def _say_unrestorable(self, step: int, error: Exception) -> None:
        print(
            f"warning: checkpoint {self.directory / str(step)} cannot be restored "
            f"({first_line(error)}); trying the one before it",
            file=sys.stderr,
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._raise_if_a_save_failed()

    def _raise_if_a_save_failed(self) -> None:
        try:
            self.manager.check_for_errors()
        except Exception as e:  # whatever the storage raised: disk full, permissions, ...
            raise RunError(
                f"{self.directory}: a checkpoint could not be written ({first_line(e)})"
            ) from e

    def close(self) -> None:
        self.manager.close()


def first_line(error: Exception) -> str:
    """An exception's message as one short line (tensorstore's run to dozens)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
