"""`python -m mats_jax.train`: a run stopped by SIGTERM and restarted reproduces the uninterrupted
run's losses exactly (data order included); bad configurations fail before any work."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.support.paths import ROOT
from tests.support.trainer import STEPS, command, losses, train


@pytest.mark.slow
def test_sigterm_then_restart_reproduces_the_uninterrupted_run(tiny_run):
    tmp, llm, _ = tiny_run
    train(command(tmp / "a", llm, tmp / "corpus"), check=True, capture_output=True, cwd=ROOT)
    reference = losses(tmp / "a")
    assert sorted(reference) == list(range(1, STEPS + 1))

    run = subprocess.Popen(
        command(tmp / "b", llm, tmp / "corpus"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = tmp / "b" / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not (metrics.exists() and len(losses(tmp / "b")) >= 5):
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=300) == 0
    finally:
        if run.poll() is None:  # timed out, or the test failed: do not leave the trainer running
            run.kill()
            run.wait()
    stopped = max(losses(tmp / "b"))
    assert 5 <= stopped < STEPS, stopped
    assert (tmp / "b" / "checkpoints" / str(stopped)).is_dir()

    restart = train(
        command(tmp / "b", llm, tmp / "corpus"),
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert f"resumed from step {stopped}" in restart.stderr
    rows = [json.loads(line) for line in (tmp / "b" / "metrics.jsonl").read_text().splitlines()]
    # each run's first log carries its compile time: the restart logged from step stopped + 1 on
    assert [r["step"] for r in rows if "perf/compile_s" in r] == [1, stopped + 1]
    resumed = losses(tmp / "b")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.lr_typo=1", "lr_typo"),
        ("--config.mesh.data=3", "does not match the 1 devices"),
        ("--config.train.grad_accum=3", "not divisible by train.grad_accum"),
        ("--config.llm.checkpoint=/nonexistent/llm", "/nonexistent/llm does not exist"),
        ("--config.train.profile_steps=-1", "train.profile_steps must be an integer >= 0, got -1"),
        (
            "--config.train.checkpoint_every=0",
            "train.checkpoint_every must be an integer >= 1, got 0",
        ),
        ("--config.train.steps=-5", "train.steps must be an integer >= 1, got -5"),
        ("--config.train.batch_size=0", "train.batch_size must be an integer >= 1, got 0"),
        ("--config.train.log_every=0", "train.log_every must be an integer >= 1, got 0"),
    ],
)
def test_bad_configuration_fails_before_any_work(tmp_path, override, message):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mats_jax.train",
            f"--config={ROOT / 'configs' / 'default.py'}",
            f"--workdir={tmp_path / 'w'}",
            override,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode != 0 and message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_ctrl_c_saves_like_sigterm(tiny_run, tmp_path):
    _, llm, corpus = tiny_run
    run = subprocess.Popen(
        command(tmp_path / "w", llm, corpus),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        metrics = tmp_path / "w" / "metrics.jsonl"
        while time.time() < deadline and not (
            metrics.exists() and len(losses(tmp_path / "w")) >= 3
        ):
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0 and "SIGINT: saving a checkpoint after this step" in err, err[-2000:]
    stopped = max(losses(tmp_path / "w"))
    assert stopped < STEPS and (tmp_path / "w" / "checkpoints" / str(stopped)).is_dir()
