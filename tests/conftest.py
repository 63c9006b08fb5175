"""Shared test set-up: exact float32 matmuls, so parity tolerances measure the port, not TF32/bf16."""

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


def torch_state(module) -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy arrays (what our converters consume)."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def listening_workdir(tmp_path_factory):
    """A tiny trained workdir (2 steps, a tiny LLaMA, random CLAP) with a Santa memory bank: what
    the listening entry points (generate, evaluate, export) read."""
    import subprocess
    import sys
    from pathlib import Path

    from mats_jax.data import prepare
    from mats_jax.data.rows import read_jsonl
    from tests.convert.test_llm_convert import tiny_llama_folder
    from tests.train.test_resume import command

    root = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("listening")
    llm = tiny_llama_folder(tmp / "llm")
    corpus = root / "mats_jax" / "corpus"
    train, val = tmp / "train.jsonl", tmp / "val.jsonl"
    lines = (corpus / "train.jsonl").read_text().splitlines()
    train.write_text("\n".join(lines[:40] + lines[-20:]) + "\n")
    val.write_text("\n".join((corpus / "val.jsonl").read_text().splitlines()[:8]) + "\n")
    prepare.prepare(tmp / "corpus", [("train", read_jsonl(train)), ("val", read_jsonl(val))])
    workdir = tmp / "work"
    run = [a for a in command(workdir, llm, tmp / "corpus") if not a.startswith("--config.train.steps")]
    subprocess.run(run + ["--config.train.steps=2"], check=True, capture_output=True, cwd=root)
    subprocess.run([sys.executable, "-m", "mats_jax.memory_bank", f"--config={root / 'configs' / 'default.py'}",
                    f"--workdir={workdir}", f"--config.data.corpus={tmp / 'corpus'}",
                    "--config.santa.bank_size=40", "--config.santa.clusters=4", "--config.santa.top_l=4"],
                   check=True, capture_output=True, cwd=root)
    return workdir
