"""`python -m mats_jax.train`: a run stopped by SIGTERM and restarted reproduces the uninterrupted
run's losses exactly (data order included); bad configurations fail before any work."""

import signal
import subprocess
import sys
import time

import pytest

from tests.support.paths import ROOT
from tests.support.trainer import STEPS, command, losses


@pytest.mark.slow
def test_sigterm_then_restart_reproduces_the_uninterrupted_run(tiny_run):
    tmp, llm, _ = tiny_run
    subprocess.run(
        command(tmp / "a", llm, tmp / "corpus"), check=True, capture_output=True, cwd=ROOT
    )
    reference = losses(tmp / "a")
    assert sorted(reference) == list(range(1, STEPS + 1))

    run = subprocess.Popen(
        command(tmp / "b", llm, tmp / "corpus"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp / "b" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(losses(tmp / "b")) >= 5):
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=300) == 0
    stopped = max(losses(tmp / "b"))
    assert 5 <= stopped < STEPS, stopped
    assert (tmp / "b" / "checkpoints" / str(stopped)).is_dir()

    subprocess.run(
        command(tmp / "b", llm, tmp / "corpus"), check=True, capture_output=True, cwd=ROOT
    )
    resumed = losses(tmp / "b")
    assert sorted(resumed) == list(range(1, STEPS + 1))
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
