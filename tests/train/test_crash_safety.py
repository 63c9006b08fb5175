"""`python -m mats_jax.train` loses nothing and stays silent about nothing: a kill -9 in the
middle of a checkpoint write, a damaged newest checkpoint, a second trainer on the same
workdir, and a restart that would change what the checkpoints hold."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.support.paths import ROOT
from tests.support.trainer import TIMEOUT, command, losses, train

STEPS, EVERY = 40, 10

# Runs the trainer with orbax's commit of one checkpoint replaced by a kill -9 of the process:
# the save of step $KILL_AT_SAVE has written its files under a temporary name, and dies before
# the rename that would make it a checkpoint (the moment a power loss or OOM kill hurts most).
KILLED_DURING_SAVE = """
import os, runpy, signal, sys
from orbax.checkpoint._src.path import atomicity

def killing(finalize):
    async def wrapped(self, *args, **kwargs):
        if self._final_path.name == os.environ["KILL_AT_SAVE"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return await finalize(self, *args, **kwargs)
    return wrapped

for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
    cls.finalize = killing(cls.finalize)
sys.argv = ["mats_jax.train", *sys.argv[1:]]
runpy.run_module("mats_jax.train", run_name="__main__", alter_sys=True)
"""


def run_command(workdir: Path, llm: Path, corpus: Path, *extra: str) -> list[str]:
    every = f"--config.train.checkpoint_every={EVERY}"
    return command(workdir, llm, corpus, f"--config.train.steps={STEPS}", every, *extra)


def rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tiny_run, tmp_path_factory):
    """An uninterrupted run: checkpoints every 10 steps, the last three kept."""
    _, llm, corpus = tiny_run
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train(run_command(workdir, llm, corpus), check=True, capture_output=True, cwd=ROOT)
    return workdir


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_resumes_from_the_previous_one(
    tiny_run, reference, tmp_path
):
    _, llm, corpus = tiny_run
    workdir = tmp_path / "killed"
    args = run_command(workdir, llm, corpus)
    killed = train(
        [sys.executable, "-c", KILLED_DURING_SAVE, *args[3:]],
        capture_output=True,
        cwd=ROOT,
        env=dict(os.environ, KILL_AT_SAVE="30"),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    committed = sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert committed == ["10", "20"]
    assert max(losses(workdir)) >= 30  # the lost steps were logged before the kill

    restart = train(args, capture_output=True, text=True, cwd=ROOT)
    assert restart.returncode == 0, restart.stderr[-2000:]
    assert "resumed from step 20" in restart.stderr
    logged = rows(workdir)
    trained = [r["step"] for r in logged if "train/loss" in r]
    assert trained == list(range(1, STEPS + 1))  # each step once: the lost ones were re-done
    # every run's first log carries its compile time: the restart's first logged step is 21
    assert [r["step"] for r in logged if "perf/compile_s" in r] == [1, 21]
    expected = losses(reference)
    assert all(losses(workdir)[s] == expected[s] for s in trained)
    events = EventAccumulator(str(workdir / "tensorboard"))  # what TensorBoard shows: once each
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_skipped_and_said(tiny_run, reference, tmp_path, capsys):
    from mats_jax.inference.listener import Listener

    _, llm, corpus = tiny_run
    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir)
    # truncate every array data file of the newest checkpoint (as a full disk or a kill during
    # a copy would), and lose its data-position item
    newest = workdir / "checkpoints" / "40"
    for data_file in (
        p for p in (newest / "state").rglob("*") if p.is_file() and p.parent.name == "d"
    ):
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    shutil.rmtree(newest / "data")

    listener = Listener.from_workdir(workdir, load_clap=False)
    assert listener.step == 30
    err = capsys.readouterr().err
    assert (
        "checkpoints/40 cannot be restored" in err
        and f"using checkpoint {workdir}/checkpoints/30" in err
    )

    more = train(
        run_command(workdir, llm, corpus, "--config.train.steps=45"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert (
        "checkpoints/40 cannot be restored" in more.stderr and "resumed from step 30" in more.stderr
    )
    assert [p.name.split("-")[0] for p in (workdir / "damaged_checkpoints").iterdir()] == ["40"]
    assert [r["step"] for r in rows(workdir) if "train/loss" in r] == list(range(1, 46))


@pytest.mark.slow
def test_a_second_trainer_on_a_running_workdir_fails_naming_the_first(tiny_run, tmp_path):
    _, llm, corpus = tiny_run
    workdir = tmp_path / "busy"
    first = subprocess.Popen(
        command(workdir, llm, corpus),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        train_log, deadline = workdir / "metrics.jsonl", time.time() + TIMEOUT
        while time.time() < deadline and first.poll() is None:
            if train_log.exists() and len(losses(workdir)) >= 2:
                break
            time.sleep(0.05)
        second = subprocess.run(
            command(workdir, llm, corpus), cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert second.returncode != 0
        assert second.stderr.strip().count("\n") == 0, second.stderr
        assert (
            "is in use by another trainer" in second.stderr and f"pid {first.pid}" in second.stderr
        )
        _, err = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 0, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert [r["step"] for r in rows(workdir) if "train/loss" in r] == list(range(1, 151))
    assert not (workdir / "trainer.lock").exists()


@pytest.mark.slow
def test_a_restart_may_change_steps_but_not_what_the_checkpoints_hold(
    tiny_run, reference, tmp_path
):
    _, llm, corpus = tiny_run
    workdir = tmp_path / "changed"
    shutil.copytree(reference, workdir)
    before = (workdir / "config.json").read_bytes()
    other_llm = tmp_path / "other_llm"
    shutil.copytree(llm, other_llm)  # the same shape: only its name tells it apart
    for change, named in [
        ("--config.mapper.dim=64", "mapper.dim 32 -> 64"),
        (f"--config.llm.checkpoint={other_llm}", "llm.checkpoint"),
    ]:
        out = train(
            run_command(workdir, llm, corpus, change), capture_output=True, text=True, cwd=ROOT
        )
        assert out.returncode == 2 and named in out.stderr, out.stderr[-2000:]
        assert out.stderr.strip().count("\n") == 0, out.stderr
        assert (workdir / "config.json").read_bytes() == before
        assert sorted(losses(workdir)) == list(range(1, STEPS + 1))  # nothing trained

    more = train(
        run_command(workdir, llm, corpus, "--config.train.steps=45"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert "changed since the last run: train.steps 40 -> 45" in more.stderr
    assert "resumed from step 40" in more.stderr
    recorded = [
        json.loads(line) for line in (workdir / "config_changes.jsonl").read_text().splitlines()
    ]
    assert [(r["step"], r["changes"]) for r in recorded] == [(40, {"train.steps": [40, 45]})]
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 45
    assert [r["step"] for r in rows(workdir) if "train/loss" in r] == list(range(1, 46))
