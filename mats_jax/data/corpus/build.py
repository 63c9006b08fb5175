"""Regenerates the shipped default corpus (``train.jsonl``, ``val.jsonl``) from the real data.

    python -m mats_jax.data.corpus.build --data-root ../shared/data [--out mats_jax/corpus]

Deterministic: fixed seeds and the builders of :mod:`mats_jax.data.sources` (whose train splits
already leave out every evaluation clip), so the output is identical byte for byte.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

from mats_jax.data.corpus import DIRECTORY
from mats_jax.data.records import Record
from mats_jax.data.sources import build

TRAIN_CAPTIONS = 2000  # AudioCaps v1 train: one caption per clip, so 2,000 clips
TRAIN_LABELS = 800  # AudioSet balanced-train segments
VAL_CLIPS = 100  # AudioCaps v1 validation clips, all 5 captions each
SEED = 0


def sample(records: Sequence[Record], n: int, seed: int) -> list[Record]:
    """``n`` records drawn without replacement, kept in their original order."""
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def corpus(data_root: Path) -> dict[str, list[Record]]:
    """The default corpus's splits."""
    val = list(build("audiocaps", data_root, "val"))
    clips = sorted({r.clip for r in val})
    val_clips = set(random.Random(SEED).sample(clips, VAL_CLIPS))
    return {
        "train": sample(list(build("audiocaps", data_root, "train")), TRAIN_CAPTIONS, SEED)
        + sample(list(build("audioset", data_root, "train")), TRAIN_LABELS, SEED),
        "val": [r for r in val if r.clip in val_clips],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.data.corpus.build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=DIRECTORY)
    args = parser.parse_args(argv)
    for split, records in corpus(args.data_root).items():
        path = args.out / f"{split}.jsonl"
        path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
        print(f"{path}: {len(records)} records, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
