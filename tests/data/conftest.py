"""Fixtures of the data-layer tests: a small synthetic corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from mats_jax.data.prepare import prepare
from mats_jax.data.rows import read_jsonl
from tests.support.records import SIZES, synthetic_records


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
