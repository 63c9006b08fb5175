"""The `python -m mats_jax.train` run the trainer tests start, and the losses it logs."""

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

STEPS = 150
# seconds one trainer run (one or several processes) may take on a slow 2-core machine
TIMEOUT = 600


def command(workdir, llm, corpus, *extra):
    return [
        sys.executable,
        "-m",
        "mats_jax.train",
        f"--config={ROOT / 'configs' / 'default.py'}",
        f"--workdir={workdir}",
        f"--config.llm.checkpoint={llm}",
        f"--config.data.corpus={corpus}",
        f"--config.train.steps={STEPS}",
        "--config.train.batch_size=4",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=1000",
        "--config.eval.every=1000",
        "--config.eval.batches=1",
        "--config.eval.batch_size=4",
        "--config.eval.samples=0",
        "--config.mapper.num_layers=1",
        "--config.mapper.dim=32",
        *extra,
    ]


def train(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, **kwargs)` killed after TIMEOUT seconds (the test then fails)."""
    return subprocess.run(args, timeout=TIMEOUT, **kwargs)


def losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
