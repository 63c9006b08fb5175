"""The `python -m mats_jax.train` run the trainer tests start, and the losses it logs."""

import json
import sys
from pathlib import Path

from tests.support.paths import ROOT

STEPS = 150


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


def losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
