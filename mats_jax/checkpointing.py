"""Training checkpoints: orbax CheckpointManager (async, keep-N, atomic) with the data iterator.

A checkpoint at step s holds the train state *after* s updates and the data iterator positioned
at the batch of update s+1, so restarting with the same workdir continues the exact run.
"""

from __future__ import annotations

from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str | Path, *, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator: grain.DatasetIterator | None = None) -> None:
        """Start an async save of `state` (device arrays are copied first, so training goes on)."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, target, data_iterator: grain.DatasetIterator | None = None):
        """The state at `step`, laid out like `target` (arrays or ShapeDtypeStructs with
        shardings: a checkpoint restores onto any mesh); `data_iterator`, if given, is
        repositioned in place (inference restores the state alone)."""
        items = {"state": ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, target))}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items)).state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
