"""`python -m mats_jax.memory_bank` on a tiny corpus whose CLAP text-embedding table is already
cached."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from mats_jax.clap import text_cache
from mats_jax.clap.load import cache_name
from mats_jax.config import base
from mats_jax.data import corpus, pipeline
from mats_jax.data.prepare import prepare
from mats_jax.data.rows import read_jsonl
from mats_jax.mats.santa import MemoryBank
from mats_jax.memory_bank import build
from mats_jax.runtime.errors import InputError
from tests.support.outputs import one_line, other_files, snapshot
from tests.support.paths import ROOT

CONFIG = """
from mats_jax.config import base

def get_config():
    c = base()
    c.data.update(corpus={corpus!r}, sources={{"audiocaps": 3.0, "audioset": 1.0}})
    c.santa.update(bank_size=20, clusters=5, iterations=5, seed=0)
    return c
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config file, corpus dir, cached table, train texts) — 24 audiocaps + 12 audioset train
    records, 5 val."""
    tmp = tmp_path_factory.mktemp("bank")
    train = list(read_jsonl(corpus.FILES["train"]))
    picked = [r for r in train if r.source == "audiocaps"][:24] + [
        r for r in train if r.source == "audioset"
    ][:12]
    val = list(itertools.islice(read_jsonl(corpus.FILES["val"]), 5))
    for split, records in (("train", picked), ("val", val)):
        (tmp / f"{split}.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    prepare(
        tmp / "corpus", [(split, read_jsonl(tmp / f"{split}.jsonl")) for split in ("train", "val")]
    )
    texts = sorted({r.text for r in pipeline.all_records(tmp / "corpus")})
    table = (
        tmp
        / "corpus"
        / "clap_text_embeddings"
        / cache_name(base().clap.checkpoint, base().clap.seed)
    )
    table.mkdir(parents=True)
    (table / text_cache.TEXTS).write_text(json.dumps(texts))
    vectors = np.random.default_rng(0).normal(size=(len(texts), 1024)).astype(np.float32)
    np.save(table / text_cache.EMBEDDINGS, vectors)
    (tmp / "config.py").write_text(CONFIG.format(corpus=str(tmp / "corpus")))
    return (
        tmp / "config.py",
        tmp / "corpus",
        text_cache.TextEmbeddings.load(table),
        {r.text for r in picked},
    )


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "mats_jax.memory_bank", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_builds_the_bank_from_training_texts_and_the_cached_table(tiny, tmp_path):
    config, _, table, train_texts = tiny
    out = run(f"--config={config}", f"--workdir={tmp_path}", "--config.santa.clusters=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RANDOM" not in out.stderr  # the cached table was used: no CLAP at all
    bank = MemoryBank.load(tmp_path / "memory_bank")
    info = json.loads((tmp_path / "memory_bank" / "bank.json").read_text())
    assert len(info["texts"]) == 20 and set(info["texts"]) <= train_texts
    want = table.lookup(info["texts"])
    np.testing.assert_allclose(
        bank.embeddings, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6
    )
    assert bank.centres.shape == (4, 1024) and int(bank.counts.sum()) == 20


def test_missing_corpus_is_one_line(tmp_path):
    out = run(
        f"--config={ROOT / 'configs' / 'default.py'}",
        f"--workdir={tmp_path}",
        f"--config.data.corpus={tmp_path / 'nowhere'}",
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: data.corpus: {tmp_path / 'nowhere'} does not exist"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c, tmp: c.data.update(corpus=str(tmp)), "manifest.json not found"),
        (lambda c, tmp: c.santa.update(clusters=50), "santa.clusters 50 must be in [1, 20]"),
        (
            lambda c, tmp: c.santa.update(bank_size=0),
            "santa.bank_size must be an integer >= 1, got 0",
        ),
        (
            lambda c, tmp: c.santa.update(iterations=-1),
            "santa.iterations must be an integer >= 0, got -1",
        ),
    ],
    ids=["not-a-corpus", "more-clusters-than-texts", "empty-bank", "negative-iterations"],
)
def test_bad_input_fails_before_clustering(tiny, tmp_path, change, message):
    _, corpus_dir, _, _ = tiny
    c = base()
    c.data.update(corpus=str(corpus_dir), sources={"audiocaps": 3.0, "audioset": 1.0})
    c.santa.update(bank_size=20)
    change(c, tmp_path)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        build(c, tmp_path / "work")


def test_a_memory_bank_folder_that_is_not_a_bank_is_never_replaced(tiny, tmp_path):
    config, _, _, _ = tiny
    target = other_files(tmp_path / "memory_bank")
    before = snapshot(target)
    out = run(f"--config={config}", f"--workdir={tmp_path}")
    assert out.returncode == 2
    assert one_line(out.stderr) == (
        f"error: {target} exists and is not a previous `memory_bank` output; "
        "move it away or choose another --workdir"
    )
    assert snapshot(target) == before
