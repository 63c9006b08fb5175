"""Multi-host training without hosts: two processes × two CPU devices (launch/local_multiprocess.sh,
gloo collectives) train like one process with four devices, stop together after the same step
when one of them gets SIGTERM, and their checkpoint resumes in one process on one device,
continuing the same run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.trainer import command, losses, train

LAUNCH = ROOT / "launch" / "local_multiprocess.sh"
MORE = 3  # steps after the preemption


def devices(count: int) -> dict:
    return dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={count}"
    )


def worker(launcher: int, index: int) -> int:
    """The pid of process `index` among the launcher's children (read from its environment)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"MATS_PROCESS_ID={index}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no process {index} among the launcher's children {children}")


def val_losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val/loss"] for r in rows if "val/loss" in r}


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_resumes_in_one(tiny_run, tmp_path):
    _, llm, corpus = tiny_run
    two = tmp_path / "two"
    # 200 steps that a preemption cuts short; warmup is 20 steps, so the learning rate of every
    # step compared here does not depend on the planned total
    log = (tmp_path / "two.log").open("w")
    run = subprocess.Popen(
        [
            str(LAUNCH),
            "-n",
            "2",
            "-d",
            "2",
            "--",
            *command(
                two,
                llm,
                corpus,
                "--config.train.steps=200",
                "--config.eval.samples=1",
                "--config.eval.max_new_tokens=2",
            ),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        env=devices(2),
        start_new_session=True,  # its own process group: the launcher and both trainers
    )
    try:
        deadline = time.time() + 400
        while (
            time.time() < deadline
            and run.poll() is None
            and not ((two / "metrics.jsonl").exists() and len(losses(two)) >= 3)
        ):
            time.sleep(0.05)
        os.kill(worker(run.pid, 1), signal.SIGTERM)  # one worker alone, as a preemption would
        assert run.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    finally:
        if run.poll() is None:  # timed out, or the test failed: kill the launcher and trainers
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    stopped = max(losses(two))
    assert 3 <= stopped <= 20 - MORE, stopped
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [
        str(stopped)
    ]  # saved once, together

    one = tmp_path / "one"
    total = f"--config.train.steps={stopped + MORE}"
    train(
        command(one, llm, corpus, total), check=True, capture_output=True, cwd=ROOT, env=devices(4)
    )
    reference = losses(one)
    assert sorted(reference) == list(range(1, stopped + MORE + 1))
    trained = losses(two)
    assert sorted(trained) == list(range(1, stopped + 1))
    for step in trained:
        assert abs(trained[step] - reference[step]) <= 1e-5, (step, trained[step], reference[step])
    assert abs(val_losses(two)[0] - val_losses(one)[0]) <= 1e-5

    # the two processes' checkpoint (four devices) restores in one process on one device
    restart = train(
        command(two, llm, corpus, total),
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=devices(1),
    )
    assert f"resumed from step {stopped}" in restart.stderr
    resumed = losses(two)
    assert sorted(resumed) == list(range(1, stopped + MORE + 1))
    for step in range(stopped + 1, stopped + MORE + 1):
        assert abs(resumed[step] - reference[step]) <= 1e-5, (step, resumed[step], reference[step])
    assert abs(val_losses(two)[stopped + MORE] - val_losses(one)[stopped + MORE]) <= 1e-5
