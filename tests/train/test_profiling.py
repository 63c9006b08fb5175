"""`--config.train.profile_steps=N` writes a profiler trace of N whole steps where TensorBoard's
Profile tab finds it, and training goes on to the end."""

import json

import pytest

from tests.support.paths import ROOT
from tests.support.trainer import command, train


@pytest.mark.slow
def test_profile_steps_write_a_trace_into_the_tensorboard_folder(tiny_run, tmp_path):
    _, llm, corpus = tiny_run
    workdir = tmp_path / "w"
    run = [a for a in command(workdir, llm, corpus) if not a.startswith("--config.train.steps")]
    out = train(
        run
        + [
            "--config.train.steps=4",
            "--config.train.profile_start=1",
            "--config.train.profile_steps=2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    traces = list((workdir / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    steps = [
        json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 4
