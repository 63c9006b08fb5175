"""Training checkpoints: orbax CheckpointManager (async, keep-N, atomic) with the data iterator.

A checkpoint at step s holds the train state *after* s updates and the data iterator positioned
at the batch of update s+1, so restarting with the same workdir continues the exact run.

With several processes every call here is collective: each process writes the shards of the
arrays its devices hold, process 0 writes the iterator state (plain JSON, the same in every
process: the pipeline's position does not depend on the number of processes) and commits the
step. Restoring lays the arrays out like the target, so a checkpoint written by two processes on
four devices restores onto one process and one device, or onto a pod.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from mats_jax.data.pipeline import CorpusIterator


class Checkpoints:
    def __init__(self, directory: str | Path, *, keep: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True
        )
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator: CorpusIterator | None = None) -> None:
        """Start an async save of `state` (device arrays are copied first, so training goes on)."""
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

    def restore_weights(
        self, step: int, trainable: nnx.State, rngs: nnx.State
    ) -> tuple[nnx.State, nnx.State]:
        """(trainable, rngs) of the state at `step`, laid out like the given (abstract) ones,
        and nothing else: no optimiser state is read, so no optimiser need exist."""
        target = {"trainable": trainable, "rngs": rngs}
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = ocp.args.PyTreeRestore(
            target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True,
        )
        restored = self.manager.restore(step, args=ocp.args.Composite(state=args)).state
        return restored["trainable"], restored["rngs"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
