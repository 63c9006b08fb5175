"""Reading a prepared corpus: per-source mixing, shuffling, per-process shards of each batch,
checkpointable order.

The pipeline is a grain ``MapDataset`` (random access by index), so the whole position of the
stream is one integer: the iterator state saved with a checkpoint is tiny and restoring it
replays exactly the batches that would have come next. For each source (of one split):

1. **shuffle** -- a global permutation of the source, seeded by ``seed`` and the source name
   (adding a source does not reorder the others), different in every epoch;
2. **repeat** -- ``num_epochs`` passes, or forever (``None``).

The sources are then interleaved by their normalised weights (grain's deterministic mixture:
weights become integers, the smallest 100, and the interleaving repeats with that period, so
ratios are exact to 1% over any few hundred records, not only on average) into one global
stream, cut into global batches of ``batch_size`` records. With ``shard_count`` > 1 a process
reads only shard ``shard_index`` of every global batch (rows ``[i·b, (i+1)·b)``, b =
``batch_size / shard_count``, the rows its devices hold): the shards are disjoint, together they
are the global batch, and the global stream does not depend on how many processes read it. So
two processes produce exactly the batches of one, and the iterator state (the global batch
index) restores onto any number of processes. With finite epochs the mixture ends when its first
source runs out, as in grain; a single source gives exactly ``num_epochs`` passes, which is what
evaluation wants. :func:`first_records` and :func:`all_records` read in stored order, unsharded
(a fixed validation set; every text, to embed once).

:func:`make_packed_iterator` reads the same global stream but packs it (first fit,
:mod:`mats_jax.data.packing`) into batches of ``rows`` rows of a static ``row_length``, several
examples per row, none split. Every process packs the *global* stream identically and keeps its
own rows, so packed batches too do not depend on the number of processes. Its state is the
stream position plus the stream indices of the examples carried over to the next batch; each
batch comes with its efficiency (real positions over computed positions) for the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grain
from array_record.python import array_record_module

from mats_jax.data.packing import Example, FirstFit, efficiency
from mats_jax.data.records import MANIFEST, SCHEMA_VERSION, Record

# grain's default (16 threads, 500 batches ahead) reads far past what a training step needs and
# keeps decoding after an iterator is abandoned; 32 batches ahead keeps any step fed.
READ_OPTIONS = grain.ReadOptions(num_threads=8, prefetch_buffer_size=32)


def load_manifest(corpus_dir: str | Path) -> dict:
    """The manifest of a prepared corpus; errors if it is missing or of another schema version."""
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: prepare the corpus first (python -m mats_jax.data.prepare)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version")
        raise ValueError(
            f"{path}: schema version {found}, this code reads {SCHEMA_VERSION}; prepare it again"
        )
    return manifest


class CorpusIterator(grain.DatasetIterator):
    """A grain iterator whose state also records the pipeline's configuration.

    Restoring a state saved under another configuration (sources, weights, seed, global batch
    size, corpus sizes, ...) would silently give a different order, so it is an error; the shard
    is not part of it (every shard stands at the same global batch). The state is plain JSON,
    the same in every process: a checkpoint stores it once.
    """

    def __init__(self, parent: grain.DatasetIterator, config: dict[str, Any]):
        super().__init__(parent)
        self._config = json.loads(json.dumps(config))  # the form it takes after a JSON round trip

    def __next__(self) -> Any:
        return next(self._parent)

    def get_state(self) -> dict[str, Any]:
        return {"position": self._parent.get_state(), "config": self._config}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("config") != self._config:
            raise ValueError(
                f"iterator state was saved with config {state.get('config')}, "
                f"this pipeline is {self._config}"
            )
        self._parent.set_state(state["position"])


def make_iterator(
    corpus_dir: str | Path,
    *,
    sources: Mapping[str, float],
    split: str,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = False,
    batch_fn: Callable[[list[Record]], Any] = list,
) -> CorpusIterator:
    """An iterator of (this shard of) batches of Records of one split of a prepared corpus (see
    module doc).

    Args:
      corpus_dir: output of :mod:`mats_jax.data.prepare`.
      sources: source name -> mixing weight (normalised; a weight of 0 leaves the source out).
      split: e.g. ``train`` or ``val``.
      batch_size: records per global batch, over all shards.
      seed: shuffle seed (0 <= seed < 2**32).
      shard_index, shard_count: which equal share of each global batch this process reads
        (``mats_jax.runtime.distributed.batch_shard``); it reads ``batch_size / shard_count``
        records per batch and nothing else.
      shuffle: permute each source (per epoch); off for evaluation.
      num_epochs: passes over each source, or None for an endless stream.
      drop_remainder: drop a last, short global batch (finite epochs only). Without it, a last,
        short global batch is cut into shards as far as its records go (later shards may get
        a shorter batch or none).
      batch_fn: turns each batch (a list of Records) into what the trainer consumes, e.g.
        token arrays; runs in grain's reader threads.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in [0, {shard_count})")
    if batch_size < 1 or batch_size % shard_count:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of shard_count {shard_count}"
        )
    ds, weights, counts = _mixture(
        corpus_dir, sources=sources, split=split, seed=seed, shuffle=shuffle, num_epochs=num_epochs
    )
    if drop_remainder and num_epochs is not None:
        ds = ds[: len(ds) // batch_size * batch_size]
    # shard i of global batch k is local batch k·count + i: batching is lazy, so a process
    # reads the records of its own shards only
    ds = ds.batch(
        batch_size // shard_count, batch_fn=lambda raw: batch_fn([Record.from_json(r) for r in raw])
    )
    ds = ds[shard_index::shard_count]
    config = {
        "sources": weights,
        "counts": counts,
        "split": split,
        "batch_size": batch_size,
        "seed": seed,
        "shuffle": shuffle,
        "num_epochs": num_epochs,
        "drop_remainder": drop_remainder,
    }
    return CorpusIterator(iter(ds.to_iter_dataset(READ_OPTIONS)), config)


@dataclasses.dataclass(frozen=True)
class StreamRecord:
    """A record of the global stream and its index there (what a packed iterator's state keeps
    of a carried example)."""

    index: int
    record: Record

    def __repr__(self) -> str:  # names the example in the packer's errors
        r = self.record
        return f"#{self.index} ({r.source} {r.task} clip {r.clip!r}: {r.answer[:60]!r})"


class PackedIterator:
    """Packed batches of one shard of a packed global stream (see :func:`make_packed_iterator`).

    Each ``next()`` is ``(batch_fn(rows), stats)``: ``rows`` this process's rows (lists of
    Records), ``stats`` a dict of plain numbers for the trainer's metrics: ``examples`` and
    ``positions`` (real positions) in this process's rows, ``efficiency`` (positions over its
    rows × row_length), ``global_efficiency`` (the same over all rows of the global batch,
    identical in every process), ``carried`` (examples carried over into the next batch).

    The state is plain JSON, the same in every process: ``{"position": the index of the next
    record of the global stream, "carry": [the global stream indices of the carried examples,
    in order], "config": the pipeline's configuration}``; a carried record is read back by its
    index (the stream is random access) and its length recomputed. Restoring a state saved under
    another configuration is an error, as for :class:`CorpusIterator`; the shard is not part of
    it, so a state restores onto any number of processes.
    """

    def __init__(
        self,
        stream: grain.MapDataset,
        packer: FirstFit,
        *,
        shard: slice,
        batch_fn: Callable[[list[list[Record]]], Any],
        config: dict[str, Any],
    ):
        self._stream, self._packer, self._shard, self._batch_fn = stream, packer, shard, batch_fn
        self._config = json.loads(json.dumps(config))  # the form it takes after a JSON round trip
        self._position = 0
        self._carry: list[Example[StreamRecord]] = []
        self._reader: grain.DatasetIterator | None = None  # from self._position, made on demand

    def __iter__(self) -> PackedIterator:
        return self

    def __next__(self) -> tuple[Any, dict[str, Any]]:
        if self._reader is None:
            self._reader = iter(self._stream[self._position :].to_iter_dataset(READ_OPTIONS))
        packed = self._packer.pack(self._carry, self._reader)
        if not any(packed.rows):  # only once a finite stream has ended and nothing is carried
            raise StopIteration
        self._position += packed.pulled
        self._carry = packed.carry
        lengths = packed.row_lengths()
        mine = lengths[self._shard]
        positions = sum(map(sum, mine))
        stats = {
            "examples": sum(map(len, mine)),
            "positions": positions,
            "efficiency": efficiency(mine, self._packer.row_length),
            "global_efficiency": efficiency(lengths, self._packer.row_length),
            "carried": len(packed.carry),
        }
        rows = [[e.key.record for e in row] for row in packed.rows[self._shard]]
        return self._batch_fn(rows), stats

    def get_state(self) -> dict[str, Any]:
        return {
            "position": self._position,
            "carry": [e.key.index for e in self._carry],
            "config": self._config,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("config") != self._config:
            raise ValueError(
                f"iterator state was saved with config {state.get('config')}, "
                f"this pipeline is {self._config}"
            )
        self.close()
        self._position = int(state["position"])
        self._carry = [self._stream[int(i)] for i in state["carry"]]

    def close(self) -> None:
        """Stop reading ahead (the next ``next()`` starts again from the current position)."""
        if self._reader is not None:
            close = getattr(self._reader, "close", None)
            if close is not None:
                close()
            self._reader = None


def make_packed_iterator(
    corpus_dir: str | Path,
    *,
    sources: Mapping[str, float],
    split: str,
    rows: int,
    row_length: int,
    max_per_row: int,
    length_fn: Callable[[Record], int],
    batch_fn: Callable[[list[list[Record]]], Any] = list,
    max_targets_per_row: int = 0,
    targets_fn: Callable[[Record], int] | None = None,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    shuffle: bool = True,
    num_epochs: int | None = None,
    lookahead: int = 64,
) -> PackedIterator:
    """An iterator of (this shard of) packed batches: ``rows`` rows of ``row_length`` positions,
    several examples per row, none split (:mod:`mats_jax.data.packing`'s first-fit rule).

    The records come from the same global stream as :func:`make_iterator`'s (same sources,
    weights, seed, shuffling and epochs). Packing happens on the *global* stream: every process
    reads the whole record stream (and computes every length), packs it identically, and keeps
    rows ``[i·r, (i+1)·r)`` of every packed batch, r = ``rows / shard_count``, i =
    ``shard_index``. So the packing, and the state, do not depend on the number of processes:
    two processes produce exactly the rows of one, and a state restores onto any number of
    them. With finite epochs the stream ends as in :func:`make_iterator`; the last batches hold
    what is left and may have empty rows.

    Args:
      corpus_dir, sources, split, seed, shuffle, num_epochs: as for :func:`make_iterator`.
      rows: rows per global batch, over all shards (a positive multiple of ``shard_count``).
      row_length: positions per row; max_per_row: examples per row at most.
      length_fn: an example's positions (e.g. its tokens, prompt included); runs in grain's
        reader threads, so it must be thread-safe, and it must be the same function when a
        state is restored (it is not part of the state's configuration). A length over
        ``row_length`` is a ValueError naming the example: cut examples to fit first.
      max_targets_per_row, targets_fn: at most that many target tokens per row (0: no bound),
        an example's targets counted by ``targets_fn`` (thread-safe, like ``length_fn``).
      batch_fn: turns this process's rows (a list of lists of Records; a row may be empty only
        at the end of a finite stream) into what the trainer consumes; runs in the caller's
        thread, on ``next()``.
      lookahead: how many consecutive examples that fit no row end a batch (the carry is also
        capped at ``rows`` examples, which ends a batch first when ``lookahead`` >= ``rows``).
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in [0, {shard_count})")
    if rows < 1 or rows % shard_count:
        raise ValueError(f"rows {rows} must be a positive multiple of shard_count {shard_count}")
    if max_targets_per_row and targets_fn is None:
        raise ValueError("max_targets_per_row needs targets_fn")
    packer = FirstFit(
        rows=rows,
        row_length=row_length,
        max_per_row=max_per_row,
        lookahead=lookahead,
        max_targets_per_row=max_targets_per_row,
    )
    ds, weights, counts = _mixture(
        corpus_dir, sources=sources, split=split, seed=seed, shuffle=shuffle, num_epochs=num_epochs
    )

    def example(index: int, raw: bytes) -> Example[StreamRecord]:
        record = Record.from_json(raw)
        targets = int(targets_fn(record)) if targets_fn is not None else 0
        return Example(StreamRecord(index, record), int(length_fn(record)), targets)

    local = rows // shard_count
    config = {
        "sources": weights,
        "counts": counts,
        "split": split,
        "seed": seed,
        "shuffle": shuffle,
        "num_epochs": num_epochs,
        "packing": _packing_state(packer),
    }
    return PackedIterator(
        ds.map_with_index(example),
        packer,
        shard=slice(shard_index * local, (shard_index + 1) * local),
        batch_fn=batch_fn,
        config=config,
    )


def _packing_state(packer: FirstFit) -> dict[str, Any]:
    """The packer's part of a packed iterator's saved configuration; an unbounded target count
    is left out, so states saved before that bound existed still restore."""
    state = dataclasses.asdict(packer) | {"rule": "first_fit"}
    if not packer.max_targets_per_row:
        del state["max_targets_per_row"]
    return state


def _mixture(
    corpus_dir: str | Path,
    *,
    sources: Mapping[str, float],
    split: str,
    seed: int,
    shuffle: bool,
    num_epochs: int | None,
) -> tuple[grain.MapDataset, dict[str, float], dict[str, int]]:
    """The global record stream (raw records, see module doc), the normalised weights (sorted by
    source) and each source's record count."""
    if any(w < 0 for w in sources.values()):
        raise ValueError(f"negative mixing weight in {dict(sources)}")
    weights = {name: float(w) for name, w in sources.items() if w > 0}
    if not weights:
        raise ValueError(f"no source with a positive weight in {dict(sources)}")
    total = sum(weights.values())
    weights = {name: w / total for name, w in sorted(weights.items())}

    corpus_dir = Path(corpus_dir)
    manifest = load_manifest(corpus_dir)
    parts, counts = [], {}
    for name in weights:
        entry = manifest["sources"].get(name, {}).get(split)
        if entry is None:
            have = sorted(f"{s}/{sp}" for s, splits in manifest["sources"].items() for sp in splits)
            raise KeyError(f"{corpus_dir} has no {name}/{split}; it has {', '.join(have)}")
        counts[name] = entry["count"]
        ds = grain.MapDataset.source(
            grain.sources.ArrayRecordDataSource([str(corpus_dir / entry["path"])])
        )
        if shuffle:
            ds = ds.shuffle(seed=_source_seed(seed, name))
        parts.append(ds.repeat(num_epochs))
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(weights.values()))
    return ds, weights, counts


def first_records(corpus_dir: str | Path, *, source: str, split: str, count: int) -> list[Record]:
    """The first ``count`` records of one source's split in stored order (all, if it has fewer).

    Not sharded: every host gets the same list, a fixed validation set.
    """
    manifest = load_manifest(corpus_dir)
    entry = manifest["sources"].get(source, {}).get(split)
    if entry is None:
        raise KeyError(f"{corpus_dir} has no {source}/{split}")
    return list(_read(Path(corpus_dir) / entry["path"], stop=count))


def all_records(corpus_dir: str | Path, manifest: dict | None = None) -> Iterator[Record]:
    """Every record of every source and split, streamed in manifest order (e.g. to embed all
    texts once).
    """
    manifest = manifest or load_manifest(corpus_dir)
    for splits in manifest["sources"].values():
        for entry in splits.values():
            yield from _read(Path(corpus_dir) / entry["path"])


def _read(path: Path, stop: int | None = None, chunk: int = 10_000) -> Iterator[Record]:
    """Records of one file in stored order, by sequential chunked reads (far faster than one by
    one).
    """
    reader = array_record_module.ArrayRecordReader(str(path))
    try:
        end = reader.num_records() if stop is None else min(stop, reader.num_records())
        for begin in range(0, end, chunk):
            yield from (
                Record.from_json(raw) for raw in reader.read(begin, min(begin + chunk, end))
            )
    finally:
        reader.close()


def _source_seed(seed: int, name: str) -> int:
    """A per-source shuffle seed in [0, 2**32) from the pipeline seed and the source's name."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**32
