"""Shared test set-up: exact float32 matmuls, so parity tolerances measure the port, not
TF32/bf16."""

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(folder, tiny LLaMA folder, prepared corpus of 60 train and 8 val records): what the
    end-to-end trainer tests train on in seconds."""
    from mats_jax.data import prepare
    from mats_jax.data.rows import read_jsonl
    from tests.support.models import tiny_llama_folder
    from tests.support.paths import ROOT

    shipped = ROOT / "mats_jax" / "data" / "corpus"
    tmp = tmp_path_factory.mktemp("tiny_run")
    llm = tiny_llama_folder(tmp / "llm")
    train, val = tmp / "train.jsonl", tmp / "val.jsonl"
    lines = (shipped / "train.jsonl").read_text().splitlines()
    train.write_text("\n".join(lines[:40] + lines[-20:]) + "\n")
    val.write_text("\n".join((shipped / "val.jsonl").read_text().splitlines()[:8]) + "\n")
    prepare.prepare(tmp / "corpus", [("train", read_jsonl(train)), ("val", read_jsonl(val))])
    return tmp, llm, tmp / "corpus"


@pytest.fixture(scope="session")
def listening_workdir(tiny_run):
    """A tiny trained workdir (2 steps, a tiny LLaMA, random CLAP) with a Santa memory bank: what
    the listening entry points (generate, evaluate, export) read."""
    import subprocess
    import sys

    from tests.support.paths import ROOT
    from tests.support.trainer import command, train

    tmp, llm, corpus = tiny_run
    workdir = tmp / "listening"
    run = [a for a in command(workdir, llm, corpus) if not a.startswith("--config.train.steps")]
    train(run + ["--config.train.steps=2"], check=True, capture_output=True, cwd=ROOT)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mats_jax.memory_bank",
            f"--config={ROOT / 'configs' / 'default.py'}",
            f"--workdir={workdir}",
            f"--config.data.corpus={corpus}",
            "--config.santa.bank_size=40",
            "--config.santa.clusters=4",
            "--config.santa.top_l=4",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=600,
    )
    return workdir
