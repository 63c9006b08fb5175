"""Frozen CLAP text embeddings of a corpus, computed once and reused by every epoch.

MATS trains on CLAP *text* embeddings of the corpus texts; the CLAP tower is frozen, so each text
is embedded once (at 30 epochs this saves the tower's cost thirty times over) and the table also
feeds Santa's memory bank. The table lives in a folder: `texts.json` (unique texts, in row order)
and `embeddings.npy` [N, dim] float32, written in chunks so an interrupted run resumes where it
stopped, and renamed into place only when complete. Batches are sharded over the data axes of the
process's own devices. With several processes (a shared folder) each embeds every n-th chunk,
process 0 assembles the table, and the others load it once it is in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from mats_jax.clap.load import EmbedFn, Tokenize, cache_name, load_clap_or_random, text_encoder
from mats_jax.runtime import distributed
from mats_jax.runtime.fileio import atomic_file, replace_directory
from mats_jax.runtime.sharding import BATCH_AXES

TEXTS, EMBEDDINGS = "texts.json", "embeddings.npy"
CACHE_FOLDER = "clap_text_embeddings"  # beside a prepared corpus, one table per CLAP


class TextEmbeddings:
    """A lookup table text -> embedding."""

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray):
        self.embeddings = embeddings
        self.row = {text: i for i, text in enumerate(texts)}

    @classmethod
    def load(cls, folder: str | Path) -> TextEmbeddings:
        folder = Path(folder)
        texts = json.loads((folder / TEXTS).read_text())
        return cls(texts, np.load(folder / EMBEDDINGS, mmap_mode="r"))

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return np.stack([self.embeddings[self.row[t]] for t in texts]).astype(np.float32)
        except KeyError as e:
            raise KeyError(f"text not in the CLAP embedding table: {e.args[0][:80]!r}") from None


def build(
    folder: str | Path,
    texts: Iterable[str],
    encoder: Callable[[], tuple[EmbedFn, Tokenize]],
    *,
    mesh: Mesh,
    batch_size: int = 64,
    chunk_batches: int = 16,
) -> TextEmbeddings:
    """Embed the unique `texts` into `folder` (resuming from finished chunks) and load the table.

    `encoder()` gives (embed, tokenize); it is called only when something is left to embed, so a
    cached table costs no CLAP at all. Every process calls this with the same texts; each runs
    its chunks on its own devices (`mesh.local_mesh`), so no step waits for another process.
    """
    folder = Path(folder)
    if (folder / EMBEDDINGS).is_file():
        return TextEmbeddings.load(folder)
    unique = sorted(set(texts))
    work = folder.with_name(folder.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    chunk = batch_size * chunk_batches
    chunks = [work / f"chunk_{i:06d}.npy" for i in range(-(-len(unique) // chunk))]
    mine = [
        i
        for i in range(jax.process_index(), len(chunks), jax.process_count())
        if not chunks[i].is_file()
    ]
    if mine:
        _embed_chunks(unique, chunks, mine, chunk, encoder, mesh.local_mesh, batch_size)
    distributed.barrier("text embeddings: chunks")
    if distributed.is_process_zero():
        for path in chunks:
            distributed.wait_for_file(path)
        table = (
            np.concatenate([np.load(p) for p in chunks]) if chunks else np.zeros((0, 0), np.float32)
        )
        np.save(work / EMBEDDINGS, table)
        (work / TEXTS).write_text(json.dumps(unique))
        for p in chunks:
            p.unlink()
        replace_directory(work, folder)
        logging.info("embedded %d unique texts into %s", len(unique), folder)
    distributed.barrier("text embeddings: table")
    distributed.wait_for_file(folder / EMBEDDINGS)
    return TextEmbeddings.load(folder)


def for_corpus(
    corpus_dir: Path, texts: Iterable[str], *, checkpoint: str, seed: int, mesh: Mesh
) -> TextEmbeddings:
    """The table of a prepared corpus's `texts` for the CLAP at `checkpoint` (random weights of
    `seed` if empty), cached beside the corpus; the trainer and the memory bank share it."""
    return build(
        corpus_dir / CACHE_FOLDER / cache_name(checkpoint, seed),
        texts,
        lambda: text_encoder(load_clap_or_random(checkpoint, seed=seed)),
        mesh=mesh,
    )


def _embed_chunks(
    texts: list[str],
    paths: list[Path],
    indices: list[int],
    chunk: int,
    encoder: Callable[[], tuple[EmbedFn, Tokenize]],
    mesh: Mesh,
    batch_size: int,
) -> None:
    """Embeds chunks `indices` of `texts` into `paths`, each written atomically."""
    embed, tokenize = encoder()
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-batch_size // ways) * ways
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    total = sum(len(texts[i * chunk : (i + 1) * chunk]) for i in indices)
    with tqdm(
        total=total,
        desc="CLAP text embeddings",
        unit="text",
        disable=not distributed.is_process_zero(),
    ) as progress:
        for i in indices:
            texts_in_chunk = texts[i * chunk : (i + 1) * chunk]
            parts = []
            for b in range(0, len(texts_in_chunk), batch_size):
                batch = texts_in_chunk[b : b + batch_size]
                ids = tokenize(batch)
                padded = np.concatenate([ids, np.repeat(ids[-1:], batch_size - len(batch), 0)])
                out = embed(jax.device_put(padded, sharding))
                parts.append(np.asarray(jax.device_get(out))[: len(batch)])
                progress.update(len(batch))
            with atomic_file(paths[i], overwrite=True) as tmp:  # the cache's own chunk
                np.save(tmp, np.concatenate(parts).astype(np.float32))
