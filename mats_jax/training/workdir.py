"""A training run's folder, as the trainer leaves it and everything after it reads it:

    config.json          the run's config (versioned: `mats_jax.config.read_json` migrates it)
    config_changes.jsonl the harmless changes later restarts made (more steps, new intervals)
    checkpoints/         orbax checkpoints of the train state and the data position, by step
    damaged_checkpoints/ checkpoints that could not be restored, moved aside (never deleted)
    trainer.lock         who trains here now (host, pid, heartbeat): one writer per workdir
    memory_bank/         Santa's bank (python -m mats_jax.memory_bank)
    corpus/              the prepared corpus, when the run used the shipped one
    metrics.jsonl, tensorboard/, eval/

Listening and export need only the trained weights: `restore_weights` reads them without the
optimiser state, so they never build an optimiser.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx

from mats_jax.config import ConfigError, read_json, write_json
from mats_jax.runtime.errors import RunError
from mats_jax.runtime.fileio import atomic_file
from mats_jax.training.checkpoints import Checkpoints

CONFIG_FILE = "config.json"
CONFIG_CHANGES = "config_changes.jsonl"
CHECKPOINTS = "checkpoints"
DAMAGED_CHECKPOINTS = "damaged_checkpoints"
LOCK_FILE = "trainer.lock"
BANK_FOLDER = "memory_bank"

# What a checkpoint holds or how its data position reads: a restart may not change these.
# Everything else (steps, intervals, optimiser settings, evaluation, Santa, the mesh) may change;
# the change is said and recorded.
FIXED_BY_CHECKPOINTS = (
    "llm.",
    "clap.",
    "mapper.",
    "lora.",
    "noise_variance",
    "train.batch_size",
    "train.grad_accum",
    "train.seed",
    "train.prng_impl",
    "data.corpus",
    "data.sources",
    "data.seed",
    "data.tail_length",
    "data.max_answer_tokens",
    "data.packed_length",
    "data.max_per_row",
)


# ... of those, what only the data position depends on (free when a checkpoint has none: an import)
DATA_POSITION = ("data.", "train.batch_size", "train.grad_accum", "train.seed")


def read_config(workdir: Path) -> ml_collections.ConfigDict:
    return read_json(Path(workdir) / CONFIG_FILE)


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    write_json(config, Path(workdir) / CONFIG_FILE)


def saved_steps(workdir: Path) -> list[int]:
    """The steps of the committed checkpoints in `workdir` (a save still being written, or
    killed mid-way, has a temporary name and is not one), in order."""
    folder = Path(workdir) / CHECKPOINTS
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def checkpoints(
    workdir: Path, config: ml_collections.ConfigDict, *, writer: bool = False
) -> Checkpoints:
    return Checkpoints(
        Path(workdir) / CHECKPOINTS, keep=config.train.keep_checkpoints, writer=writer
    )


def restore_weights(
    workdir: Path,
    config: ml_collections.ConfigDict,
    step: int | None,
    trainable: nnx.State,
    rngs: nnx.State,
) -> tuple[int, nnx.State, nnx.State]:
    """(step, trainable, rngs) of checkpoint `step` (default: the latest), laid out like the
    given abstract states."""
    manager = checkpoints(workdir, config)
    try:
        return manager.restore_weights(step, trainable, rngs)
    finally:
        manager.close()


def check_restart(
    workdir: Path, config: ml_collections.ConfigDict, *, data_fixed: bool = True
) -> dict[str, tuple[Any, Any]]:
    """The changes `config` makes to the run that wrote `workdir`'s config.json, {key: (old,
    new)}: only harmless ones. A change to what the checkpoints hold (FIXED_BY_CHECKPOINTS) is
    a ConfigError naming every such key, raised before anything is written. data_fixed False:
    the checkpoints hold no data position (an import), so DATA_POSITION settings may change."""
    if not (Path(workdir) / CONFIG_FILE).is_file():
        return {}
    old, new = (
        _flat(read_config(workdir).to_dict()),
        _flat(json.loads(config.to_json_best_effort())),
    )
    changes = {
        k: (old.get(k), new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    }
    fixed = {
        k: v
        for k, v in changes.items()
        if k.startswith(FIXED_BY_CHECKPOINTS) and (data_fixed or not k.startswith(DATA_POSITION))
    }
    if fixed:
        listed = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in fixed.items())
        raise ConfigError(
            f"{workdir} holds checkpoints of another run ({listed}): "
            "use a new --workdir, or the values it was trained with"
        )
    return changes


def record_changes(workdir: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Appends a restart's harmless changes to config_changes.jsonl."""
    with (Path(workdir) / CONFIG_CHANGES).open("a") as f:
        f.write(
            json.dumps(
                {
                    "step": step,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "changes": {k: [a, b] for k, (a, b) in changes.items()},
                }
            )
            + "\n"
        )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("sources", "architecture"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class WorkdirLock:
    """One trainer per workdir: `trainer.lock` names its holder (host, pid) and a heartbeat.

    A second trainer fails at once naming the holder. A holder that died leaves a lock that is
    taken over: on the same host when its pid is gone, elsewhere once its heartbeat is older
    than `stale_after_s` (a shared workdir on NFS or a bucket has no reliable file locks).
    """

    def __init__(self, workdir: Path, *, stale_after_s: float = 900.0, beat_every_s: float = 60.0):
        self.path = Path(workdir) / LOCK_FILE
        self.stale_after_s, self.beat_every_s = stale_after_s, beat_every_s
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.last_beat = 0.0

    def __enter__(self) -> WorkdirLock:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
        except FileExistsError:
            holder = self._holder()
            if holder is not None and not self._stale(holder):
                raise RunError(
                    f"{self.path.parent} is in use by another trainer (host {holder.get('host')}, "
                    f"pid {holder.get('pid')}, since {holder.get('started')}): stop it, or use "
                    "another --workdir"
                ) from None
        self.beat(force=True)
        return self

    def beat(self, force: bool = False) -> None:
        """Refreshes the heartbeat (at most every beat_every_s unless forced)."""
        now = time.time()
        if force or now - self.last_beat >= self.beat_every_s:
            with atomic_file(self.path, overwrite=True) as tmp:  # its own lock
                tmp.write_text(json.dumps({**self.me, "heartbeat": now}))
            self.last_beat = now

    def __exit__(self, *exc) -> None:
        holder = self._holder()
        if holder is not None and (holder.get("host"), holder.get("pid")) == (
            self.me["host"],
            self.me["pid"],
        ):
            self.path.unlink(missing_ok=True)

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # being written, or torn by a crash: treated as free

    def _stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == self.me["host"]:
            try:
                os.kill(int(holder.get("pid", -1)), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, ValueError, OverflowError):
                return False
            return False
        return time.time() - float(holder.get("heartbeat", 0.0)) > self.stale_after_s
