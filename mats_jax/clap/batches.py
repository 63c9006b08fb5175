"""CLAP embeddings of many audio files, batch by batch: files that cannot be read are reported
and skipped, the others still come out (the loop behind `Listener.embed_audio` and
`python -m mats_jax.embed`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from mats_jax.clap.audio import Crop, Rng, load_batch
from mats_jax.clap.model import CLAP, embed_audio_fn


def embed_audio_files(
    clap: CLAP,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 8,
    crop: Crop = "center",
    rng: Rng = None,
    to_devices: Callable[[np.ndarray], jax.Array] = np.asarray,
    progress: bool = False,
) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """(embeddings [N, dim] float32 as the encoder returns them, the N files embedded, {bad file:
    reason}). `to_devices` places a batch of clips (e.g. split over the process's devices,
    padded: rows past the batch are dropped)."""
    embed = embed_audio_fn(clap)
    config = clap.config
    if not isinstance(rng, (np.random.Generator, random.Random)):
        rng = np.random.default_rng(rng)  # one generator for all batches: a seed fixes every crop
    rows, names, errors = [], [], {}
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc="audio", unit="batch", disable=not progress):
        batch = [str(p) for p in paths[start : start + batch_size]]
        clips, failed = load_batch(
            batch, sample_rate=config.sample_rate, duration=config.duration, crop=crop, rng=rng
        )
        errors.update(failed)
        if len(clips):
            rows.append(np.asarray(embed(to_devices(clips))[0])[: len(clips)])
            names += [p for p in batch if p not in failed]
    dim = config.projection_dim
    return (
        (np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)),
        names,
        errors,
    )
