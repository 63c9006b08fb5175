"""Fixtures of the data-layer tests: the real data in ../shared/data and small synthetic corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mats_jax.data.prepare import prepare
from mats_jax.data.records import caption
from mats_jax.data.rows import read_jsonl

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("MATS_JAX_DATA_ROOT", REPO.parent / "shared" / "data"))

requires_data = pytest.mark.skipif(
    not (DATA_ROOT / "captions").is_dir(), reason=f"real data not found at {DATA_ROOT}"
)

# Synthetic corpus: source -> (train records, val records). Texts are unique, so a text names a record.
SIZES = {"alpha": (600, 40), "beta": (300, 20), "gamma": (150, 10)}


def synthetic_records(source: str, split: str, n: int) -> list:
    return [caption(f"{source} {split} {i}", dataset=source, source=source, clip=f"{source}:{i}") for i in range(n)]


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A prepared corpus of three sources with train and val splits (made from user JSONL)."""
    tmp = tmp_path_factory.mktemp("synthetic")
    inputs = []
    for split, column in (("train", 0), ("val", 1)):
        path = tmp / f"{split}.jsonl"
        rows = [r for s, n in SIZES.items() for r in synthetic_records(s, split, n[column])]
        path.write_text("".join(r.to_json() + "\n" for r in rows))
        inputs.append((split, read_jsonl(path)))
    out = tmp / "corpus"
    prepare(out, inputs)
    return out
