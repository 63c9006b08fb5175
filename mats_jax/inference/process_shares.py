"""Evaluation and generation over every process of a pod: each process embeds and describes its
share of every batch on its own devices, and every process gets the merged results in order.

A batch is laid out as one process holding all of the run's devices would lay it out: padded
(its last row repeated) to a multiple of the device count, every device holding the same number
of rows, process i the i-th block of them. Each device then computes what it would compute in
one process, so the merged texts are one process's texts (`Listener.describe(rows=...)` keeps
Santa's noise and the prompt padding the whole batch's). A file that cannot be read shifts the
rows after it within its process's block, never a device's row count.

Results merge by collectives (`process_allgather` of fixed-size arrays and of JSON bytes), so
the processes need no shared filesystem, only the same workdir, metadata and clips. Process 0
then writes the outputs, and the others wait at `wait_for_outputs` until it has.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from mats_jax.clap.batches import embed_audio_files
from mats_jax.inference.listener import Listener
from mats_jax.runtime import distributed
from mats_jax.runtime.cli import fail
from mats_jax.runtime.sharding import split_rows


@dataclasses.dataclass(frozen=True)
class Shares:
    """How the run splits a batch: `count` processes of `devices` devices each; this is `index`."""

    index: int = 0
    count: int = 1
    devices: int = 1

    @property
    def writes(self) -> bool:
        """Process 0 writes the outputs and speaks for the run."""
        return self.index == 0

    def rows(self, batch: int) -> slice:
        """This process's rows of a batch of `batch` rows padded to a multiple of the run's
        device count (rows from `batch` on are padding)."""
        width = -(-batch // (self.count * self.devices)) * self.devices
        return slice(self.index * width, (self.index + 1) * width)


def join() -> Shares:
    """Joins the run's other processes, if any (`mats_jax.runtime.distributed.initialize`: the
    MATS_* environment of launch/local_multiprocess.sh, an srun step, a TPU pod slice); one-line
    error and exit status 2 when the cluster cannot form. Call before anything touches a device."""
    try:
        distributed.initialize()
    except distributed.DistributedError as e:
        fail(str(e))
    shares = Shares(jax.process_index(), jax.process_count(), jax.local_device_count())
    if shares.count * shares.devices != jax.device_count():
        fail(
            f"process {shares.index} has {shares.devices} of the run's {jax.device_count()} "
            f"devices: every one of the {shares.count} processes needs as many"
        )
    return shares


def embed_audio(
    listener: Listener, paths: Sequence[str | Path], *, batch_size: int, shares: Shares
) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """`Listener.embed_audio(paths)` with every process embedding its rows of each batch; every
    process returns the whole result: (embeddings [N, dim], the N files embedded, {bad file:
    reason}), in the order of `paths`."""
    paths = [str(p) for p in paths]
    starts = range(0, len(paths), batch_size)
    blocks, own_files, own_errors = [], [], {}
    for start in starts:
        batch = paths[start : start + batch_size]
        mine = shares.rows(len(batch))
        width = mine.stop - mine.start
        embeddings, files, errors = embed_audio_files(
            listener.clap,
            batch[mine],
            batch_size=width,
            to_devices=lambda clips, width=width: split_rows(listener.mesh, _padded(clips, width)),
        )
        block = np.zeros((width, embeddings.shape[1]), np.float32)
        block[: len(embeddings)] = embeddings
        blocks.append(block)
        own_files.append(files)
        own_errors |= errors
    every_block = _gather_array(np.concatenate(blocks))  # [processes, rows, dim]
    every_files, every_errors = zip(*_gather_json([own_files, own_errors]))
    rows, files, offset = [], [], 0
    for b, block in enumerate(blocks):
        for process, names in enumerate(f[b] for f in every_files):
            rows.append(every_block[process, offset : offset + len(names)])
            files += names
        offset += len(block)
    errors = {k: v for e in every_errors for k, v in e.items()}
    return (
        np.concatenate(rows),
        files,
        {path: errors[path] for path in paths if path in errors},
    )


def describe(
    listener: Listener,
    embeddings: np.ndarray,
    *,
    batch_size: int,
    shares: Shares,
    question: str | Sequence[str] | None = None,
    progress: str | None = None,
    **options: Any,
) -> list[str]:
    """`Listener.describe` of `embeddings` [N, dim] (the same on every process) in batches of
    `batch_size`, with every process describing its rows of each batch; every process returns
    all N texts, in order. `question`: one for all or one per embedding; `options`: describe's
    (task, tag, santa, generation, seed); `progress`: a progress bar's label on process 0."""
    n = len(embeddings)
    per_row = question is not None and not isinstance(question, str)
    starts = range(0, n, batch_size)
    own: list[list[str]] = []
    for start in tqdm(
        starts, desc=progress, unit="batch", disable=not progress or not shares.writes
    ):
        stop = min(n, start + batch_size)
        mine = shares.rows(stop - start)
        padded = shares.count * (mine.stop - mine.start)
        texts = (
            listener.describe(
                _padded(embeddings[start:stop], padded),
                question=_padded(list(question[start:stop]), padded) if per_row else question,
                rows=mine,
                **options,
            )
            if mine.start < stop - start
            else []
        )
        own.append(texts[: stop - start - mine.start])
    every = _gather_json(own)
    return [text for b in range(len(own)) for texts in every for text in texts[b]]


def wait_for_outputs() -> None:
    """Every process waits here until process 0 has written the outputs (it calls this after
    writing): jax's own exit waits only minutes for the other processes, not a long scoring."""
    distributed.barrier("outputs written")


def _padded(rows: np.ndarray | list, size: int) -> np.ndarray | list:
    """`rows` with its last row repeated up to `size` rows, as `split_rows` pads a batch."""
    extra = size - len(rows)
    if isinstance(rows, list):
        return rows + rows[-1:] * extra
    return np.concatenate([rows, np.repeat(rows[-1:], extra, 0)])


def _gather_array(array: np.ndarray) -> np.ndarray:
    """[processes, ...]: `array` (the same shape in every process) of every process, in order."""
    if jax.process_count() == 1:
        return array[None]
    return np.asarray(multihost_utils.process_allgather(array))


def _gather_json(value: Any) -> list[Any]:
    """`value` (JSON-able) of every process, in process order."""
    if jax.process_count() == 1:
        return [value]
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = _gather_array(np.int32(len(data)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: len(data)] = data
    return [json.loads(row[:size].tobytes()) for row, size in zip(_gather_array(padded), sizes)]
