"""Many processes, one run: joining the cluster at start-up, and what the processes must agree on.

Every entry point calls `initialize` before touching a device. How a process learns that it is
one of several, first match wins:

1. explicit -- `--coordinator_address`, `--num_processes`, `--process_id` (or the environment
   variables MATS_COORDINATOR_ADDRESS, MATS_NUM_PROCESSES, MATS_PROCESS_ID), as
   `launch/local_multiprocess.sh` and `launch/gpu_slurm.sbatch` set them; each process keeps all
   of its local devices (one process per host drives every GPU of its node);
2. SLURM -- an `srun` step of more than one task: jax's own detection (one process per GPU,
   chosen by SLURM_LOCALID);
3. a Cloud TPU VM -- jax's own detection from the TPU metadata (every worker of a pod slice).

Otherwise there is one process and nothing to initialise. CPU processes run collectives through
gloo, jax's default `jax_cpu_collectives_implementation`.

`jax.distributed.initialize` does not raise when a peer fails to appear: after its timeout the
C++ runtime aborts the process with a stack trace. So a process other than 0 first checks that
the coordinator's port answers, and a watchdog turns a cluster that never completes into one
line naming the address and exit status 2 -- a clear failure, never a hang.

The rest is what several processes need from the trainer: barriers with a timeout, files that
process 0 writes and the others read (the workdir must be shared: NFS, Lustre, a bucket mounted
with gcsfuse), and which rows of each global batch a process's devices hold, so that it reads
exactly those records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import jax
from jax.sharding import Sharding

ENV_COORDINATOR = "MATS_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "MATS_NUM_PROCESSES"
ENV_PROCESS_ID = "MATS_PROCESS_ID"
ENV_TIMEOUT = "MATS_COORDINATOR_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
BARRIER_TIMEOUT_S = 3 * 3600  # process 0 may prepare a corpus while the others wait
FILE_VISIBLE_TIMEOUT_S = 120  # network filesystems may show a new file to other hosts late
_SLURM_STEP = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
_barrier_count = itertools.count()


class DistributedError(RuntimeError):
    """A cluster that cannot form or a process that cannot follow the others; one line."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How this process joins: method "single" (nothing to do), "explicit", "slurm" or "tpu"."""

    method: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def plan(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    on_cloud_tpu_vm: bool | None = None,
) -> Plan:
    """What `initialize` will do, from flags (given values) and `environ`; no side effects."""
    address = coordinator_address or environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _int_env(environ, ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _int_env(environ, ENV_PROCESS_ID)
    if (address, count, index) != (None, None, None):
        if count == 1 and index in (None, 0):
            return Plan("single")
        missing = [
            name
            for name, value in (
                ("--coordinator_address", address),
                ("--num_processes", count),
                ("--process_id", index),
            )
            if value is None
        ]
        if missing:
            raise DistributedError(
                f"a multi-process run needs --coordinator_address, --num_processes and "
                f"--process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); "
                f"missing {', '.join(missing)}"
            )
        if count < 1 or not 0 <= index < count:
            raise DistributedError(
                f"process id {index} is not in [0, {count}) (--num_processes {count})"
            )
        _split_address(address)
        return Plan("explicit", address, count, index)
    if all(name in environ for name in _SLURM_STEP) and int(environ["SLURM_NTASKS"]) > 1:
        return Plan(
            "slurm",
            num_processes=int(environ["SLURM_NTASKS"]),
            process_id=int(environ["SLURM_PROCID"]),
        )
    if _on_cloud_tpu_vm() if on_cloud_tpu_vm is None else on_cloud_tpu_vm:
        return Plan("tpu")
    return Plan("single")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float | None = None,
) -> Plan:
    """Joins the cluster the flags or the environment describe (see module doc); a no-op for
    one process. Must run before anything touches a device. Raises DistributedError (or ends
    the process with a one-line error, exit status 2, when the cluster does not complete)."""
    how = plan(coordinator_address, num_processes, process_id)
    if how.method == "single":
        return how
    timeout = (
        timeout_s
        if timeout_s is not None
        else (_int_env(os.environ, ENV_TIMEOUT) or DEFAULT_TIMEOUT_S)
    )
    deadline = time.monotonic() + timeout
    if how.method == "explicit":
        where = f"the JAX coordinator at {how.coordinator_address}"
        if how.process_id == 0:
            _check_port_free(how.coordinator_address)
        else:
            _wait_until_reachable(how.coordinator_address, deadline, timeout, how)
        # "deactivate": SLURM detection would otherwise pin this process to one GPU
        kwargs = dict(
            coordinator_address=how.coordinator_address,
            num_processes=how.num_processes,
            process_id=how.process_id,
            cluster_detection_method="deactivate",
        )
    else:
        where = f"the JAX coordinator found by {how.method} detection"
        kwargs = dict(cluster_detection_method="slurm") if how.method == "slurm" else {}
    remaining = max(1.0, deadline - time.monotonic())
    who = (
        f"process {how.process_id} of {how.num_processes}" if how.num_processes else "this process"
    )
    message = (
        f"error: {who}: not every process joined {where} within {timeout:g} s; start all of them "
        f"with the same address and process count (or raise {ENV_TIMEOUT})"
    )
    with _watchdog(remaining, message):
        # jax's own deadline comes later, so the watchdog's message is what the user sees
        jax.distributed.initialize(initialization_timeout=int(remaining) + 60, **kwargs)
    return how


def is_process_zero() -> bool:
    """The process that writes logs, metrics, configs and caches."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Waits until every process reaches the barrier `name` (calls must come in the same order
    on all processes); a no-op for one process."""
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost  # its barrier takes a timeout, unlike a collective

    key = f"mats_jax_{name}_{next(_barrier_count)}"
    try:
        multihost.get_barrier_sync_fn()(key=key, timeout_ms=int(timeout_s * 1000))
    except jax.errors.JaxRuntimeError as e:
        raise DistributedError(
            f"process {jax.process_index()}: not every process reached '{name}' within "
            f"{timeout_s:g} s ({str(e).splitlines()[0]})"
        ) from None


@contextlib.contextmanager
def process_zero_first(name: str) -> Iterator[None]:
    """Runs the block on process 0, then on the others: a cache that process 0 builds into the
    shared workdir is found complete by the rest."""
    if not is_process_zero():
        barrier(name)
    yield
    if is_process_zero():
        barrier(name)


def wait_for_file(path: Path, timeout_s: float = FILE_VISIBLE_TIMEOUT_S) -> None:
    """Waits until `path`, which another process wrote, is visible here; a filesystem that never
    shows it is not shared, which is an error worth naming."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise DistributedError(
                f"process {jax.process_index()} does not see {path}, written by another "
                f"process, after {timeout_s:g} s: the workdir must be on a filesystem every "
                f"process shares (NFS, Lustre, a bucket mounted with gcsfuse)"
            )
        time.sleep(0.5)


def batch_shard(sharding: Sharding, batch_size: int) -> tuple[int, int]:
    """(index, count): this process's devices hold rows [index·b, (index+1)·b) of a batch of
    `batch_size` rows laid out by `sharding` (one dimension), b = batch_size / count.

    The process reads those rows and nothing else; processes that share rows (a tensor axis
    across hosts) read the same ones.
    """
    blocks = sorted(
        {
            (s.start or 0, batch_size if s.stop is None else s.stop)
            for (s,) in sharding.addressable_devices_indices_map((batch_size,)).values()
        }
    )
    start, stop = blocks[0][0], max(end for _, end in blocks)
    size = stop - start
    gap = any(b_start > a_end for (_, a_end), (b_start, _) in zip(blocks, blocks[1:]))
    if gap or batch_size % size or start % size:
        raise DistributedError(
            f"process {jax.process_index()}'s devices hold batch rows "
            f"{[list(b) for b in blocks]} of {batch_size}, not one equal share: order the "
            f"mesh's devices so that each process's devices are adjacent on the data axes"
        )
    return start // size, batch_size // size


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r} is not an integer") from None


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"coordinator address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _check_port_free(address: str) -> None:
    """Process 0 starts the coordinator service on the address's port, on every interface."""
    _, port = _split_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise DistributedError(
                f"process 0 cannot start the JAX coordinator on port {port} ({e.strerror}): "
                f"choose another port in --coordinator_address {address}"
            ) from None


def _wait_until_reachable(address: str, deadline: float, timeout: float, how: Plan) -> None:
    host, port = _split_address(address)
    while True:
        try:
            with socket.create_connection(
                (host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))
            ):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {how.process_id} of {how.num_processes} cannot reach the JAX "
                    f"coordinator at {address} within {timeout:g} s: is process 0 running, "
                    f"and is {host} reachable from here on port {port}?"
                ) from None
            time.sleep(0.25)


@contextlib.contextmanager
def _watchdog(seconds: float, message: str) -> Iterator[None]:
    """Ends the process with `message` (exit status 2) if the block takes longer than `seconds`;
    the block may be stuck in C++, where no Python exception can reach it."""

    def fire() -> None:
        print(message, file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _on_cloud_tpu_vm() -> bool:
    """Whether `import jax` found TPU chips and libtpu (jax's own test for a Cloud TPU VM)."""
    from jax._src import cloud_tpu_init  # no public API tells this before the backend starts

    return cloud_tpu_init.running_in_cloud_tpu_vm
