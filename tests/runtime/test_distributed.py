"""mats_jax.runtime.distributed: how a process learns it is one of several, what the processes
agree on (barriers, files process 0 writes, which rows of a batch each reads, one text-embedding
table), and failures that name the problem instead of hanging."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mats_jax.clap import text_cache
from mats_jax.runtime import distributed
from mats_jax.runtime.distributed import DistributedError, Plan, plan
from mats_jax.runtime.sharding import BATCH_AXES, make_mesh

# not tests.support.paths.ROOT: this file also runs as a script (the workers), where `tests`
# is not importable
ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "local_multiprocess.sh"
SLURM = {
    "SLURM_JOB_ID": "77",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


def test_explicit_flags_or_environment():
    assert plan("10.0.0.1:1234", 4, 2, environ={}) == Plan("explicit", "10.0.0.1:1234", 4, 2)
    env = {"MATS_COORDINATOR_ADDRESS": "host:99", "MATS_NUM_PROCESSES": "2", "MATS_PROCESS_ID": "1"}
    assert plan(environ=env) == Plan("explicit", "host:99", 2, 1)
    assert plan(process_id=0, environ=env) == Plan(
        "explicit", "host:99", 2, 0
    )  # a flag beats the environment
    assert plan("h:1", 2, 0, environ=SLURM) == Plan(
        "explicit", "h:1", 2, 0
    )  # and SLURM's own variables


def test_one_process_or_nothing_said_is_single():
    assert plan(environ={}, on_cloud_tpu_vm=False).method == "single"
    assert plan(num_processes=1, environ={}).method == "single"
    assert plan(environ=SLURM | {"SLURM_NTASKS": "1"}, on_cloud_tpu_vm=False).method == "single"


def test_slurm_and_tpu_detection():
    assert plan(environ=SLURM) == Plan("slurm", num_processes=2, process_id=1)
    assert plan(environ={}, on_cloud_tpu_vm=True).method == "tpu"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(coordinator_address="h:1", num_processes=2), "missing --process_id"),
        (dict(num_processes=2, process_id=0), "missing --coordinator_address"),
        (
            dict(coordinator_address="h:1", num_processes=2, process_id=2),
            "process id 2 is not in [0, 2)",
        ),
        (dict(coordinator_address="nohostport", num_processes=2, process_id=0), "is not HOST:PORT"),
    ],
)
def test_incomplete_or_wrong_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(DistributedError, match=message.replace("[", r"\[").replace(")", r"\)")):
        plan(**kwargs, environ={})
    with pytest.raises(DistributedError, match="MATS_NUM_PROCESSES='two' is not an integer"):
        plan(environ={"MATS_NUM_PROCESSES": "two"})


def test_one_process_reads_the_whole_batch_and_needs_no_barrier(tmp_path):
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    assert distributed.batch_shard(NamedSharding(mesh, PartitionSpec(BATCH_AXES)), 8) == (0, 1)
    distributed.barrier("alone")
    with distributed.process_zero_first("alone"):
        pass
    with pytest.raises(DistributedError, match="filesystem every process shares"):
        distributed.wait_for_file(tmp_path / "never", timeout_s=0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(*flags: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mats_jax.train",
            f"--config={ROOT / 'configs' / 'default.py'}",
            *flags,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    return out, time.perf_counter() - start


def test_unreachable_coordinator_fails_in_time_naming_the_address(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    out, seconds = _train(
        f"--workdir={tmp_path / 'w'}",
        f"--coordinator_address={address}",
        "--num_processes=2",
        "--process_id=1",
        "--coordinator_timeout=3",
    )
    assert out.returncode == 2
    assert (
        f"error: process 1 of 2 cannot reach the JAX coordinator at {address} within 3 s"
        in out.stderr
    )
    assert "Traceback" not in out.stderr and seconds < 60


def test_a_peer_that_never_joins_fails_in_time_naming_the_address(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    out, seconds = _train(
        f"--workdir={tmp_path / 'w'}",
        f"--coordinator_address={address}",
        "--num_processes=2",
        "--process_id=0",
        "--coordinator_timeout=3",
    )
    assert out.returncode == 2
    assert (
        "error: process 0 of 2: not every process joined the JAX coordinator "
        f"at {address} within 3 s" in out.stderr
    )
    assert "Traceback" not in out.stderr and "Check failure" not in out.stderr and seconds < 60


def test_a_mesh_that_does_not_divide_the_devices_fails_on_every_process(tmp_path):
    out = subprocess.run(
        [
            str(LAUNCH),
            "-n",
            "2",
            "-d",
            "2",
            "--",
            sys.executable,
            "-m",
            "mats_jax.train",
            f"--config={ROOT / 'configs' / 'default.py'}",
            f"--workdir={tmp_path / 'w'}",
            "--config.mesh.data=3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )
    assert out.returncode == 2
    assert (
        "error: mesh data×fsdp×tensor = 3×1×1 = 3 does not match the 4 devices "
        "(2 processes × 2 devices)" in out.stderr
    )
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_two_processes_share_barriers_files_batches_and_one_embedding_table(tmp_path):
    out = subprocess.run(
        [str(LAUNCH), "-n", "2", "-d", "2", "--", sys.executable, __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in range(2)]
    assert [r["shard"] for r in results] == [[0, 2], [1, 2]]  # each reads the rows its devices hold
    assert [r["marker"] for r in results] == ["written by 0", "written by 0"]
    assert [r["encoder_calls"] for r in results] == [1, 1]  # four chunks, two each
    for r in results:
        np.testing.assert_array_equal(r["table"], np.array(_expected_embeddings(TEXTS)))
    assert sorted(p.name for p in (tmp_path / "table").iterdir()) == [
        "embeddings.npy",
        "texts.json",
    ]
    assert not (tmp_path / "table.partial").exists()


TEXTS = [f"text {i}" for i in range(7)]


def _tokenize(texts: list[str]) -> np.ndarray:
    return np.array([[int(t.split()[1]), len(t)] for t in texts], np.int32)


def _expected_embeddings(texts: list[str]) -> np.ndarray:
    return _tokenize(texts).astype(np.float32) * 2


def _worker(folder: Path) -> None:
    """One of two processes (launch/local_multiprocess.sh -n 2 -d 2)."""
    distributed.initialize()
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    result = {"shard": distributed.batch_shard(NamedSharding(mesh, PartitionSpec(BATCH_AXES)), 8)}
    marker = folder / "marker"
    with distributed.process_zero_first("marker"):
        if distributed.is_process_zero():
            marker.write_text("written by 0")
        result["marker"] = marker.read_text()
    calls = []

    def encoder():
        calls.append(1)
        return jax.jit(lambda ids: ids.astype(jnp.float32) * 2), _tokenize

    table = text_cache.build(
        folder / "table", TEXTS + TEXTS[:3], encoder, mesh=mesh, batch_size=2, chunk_batches=1
    )
    result |= {"table": table.lookup(TEXTS).tolist(), "encoder_calls": len(calls)}
    (folder / f"process_{jax.process_index()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
