"""Frozen CLAP text embeddings of a corpus, computed once and reused by every epoch.

MATS trains on CLAP *text* embeddings of the corpus texts; the CLAP tower is frozen, so each text
is embedded once (at 30 epochs this saves the tower's cost thirty times over) and the table also
feeds Santa's memory bank. The table lives in a folder: `texts.json` (unique texts, in row order)
and `embeddings.npy` [N, dim] float32, written in chunks so an interrupted run resumes where it
stopped, and renamed into place only when complete. Batches are sharded over the mesh's data axes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

EmbedFn = Callable[[np.ndarray], jax.Array]
Tokenize = Callable[[list[str]], np.ndarray]
TEXTS, EMBEDDINGS = "texts.json", "embeddings.npy"
BATCH_AXES = ("data", "fsdp")


class TextEmbeddings:
    """A lookup table text -> embedding."""

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray):
        self.embeddings = embeddings
        self.row = {text: i for i, text in enumerate(texts)}

    @classmethod
    def load(cls, folder: str | Path) -> "TextEmbeddings":
        folder = Path(folder)
        texts = json.loads((folder / TEXTS).read_text())
        return cls(texts, np.load(folder / EMBEDDINGS, mmap_mode="r"))

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return np.stack([self.embeddings[self.row[t]] for t in texts]).astype(np.float32)
        except KeyError as e:
            raise KeyError(f"text not in the CLAP embedding table: {e.args[0][:80]!r}") from None


def build(folder: str | Path, texts: Iterable[str], encoder: Callable[[], tuple[EmbedFn, Tokenize]],
          *, mesh: Mesh, batch_size: int = 64, chunk_batches: int = 16) -> TextEmbeddings:
    """Embed the unique `texts` into `folder` (resuming from finished chunks) and load the table.

    `encoder()` gives (embed, tokenize); it is called only when something is left to embed, so a
    cached table costs no CLAP at all.
    """
    folder = Path(folder)
    if (folder / EMBEDDINGS).is_file():
        return TextEmbeddings.load(folder)
    embed, tokenize = encoder()
    unique = sorted(set(texts))
    work = folder.with_name(folder.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    devices = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-batch_size // devices) * devices
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    chunk = batch_size * chunk_batches
    chunks = []
    with tqdm(total=len(unique), desc="CLAP text embeddings", unit="text",
              disable=jax.process_index() != 0) as progress:
        for start in range(0, len(unique), chunk):
            path = work / f"chunk_{start // chunk:06d}.npy"
            chunks.append(path)
            texts_in_chunk = unique[start:start + chunk]
            if not path.is_file():
                parts = []
                for b in range(0, len(texts_in_chunk), batch_size):
                    batch = texts_in_chunk[b:b + batch_size]
                    ids = tokenize(batch)
                    padded = np.concatenate([ids, np.repeat(ids[-1:], batch_size - len(batch), 0)])
                    out = embed(jax.device_put(padded, sharding))
                    parts.append(np.asarray(jax.device_get(out))[:len(batch)])
                np.save(path.with_suffix(".tmp.npy"), np.concatenate(parts).astype(np.float32))
                os.replace(path.with_suffix(".tmp.npy"), path)
            progress.update(len(texts_in_chunk))
    table = np.concatenate([np.load(p) for p in chunks]) if chunks else np.zeros((0, 0), np.float32)
    np.save(work / EMBEDDINGS, table)
    (work / TEXTS).write_text(json.dumps(unique))
    for p in chunks:
        p.unlink()
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(work, folder)
    logging.info("embedded %d unique texts into %s", len(unique), folder)
    return TextEmbeddings.load(folder)
