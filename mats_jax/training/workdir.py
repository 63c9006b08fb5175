"""A training run's folder, as the trainer leaves it and everything after it reads it:

    config.json          the run's config (versioned: `mats_jax.config.read_json` migrates it)
    run_start.json       where a run started from another's weights (`train.init_from`)
    import.json          in a `convert mats` workdir: the original checkpoint it holds (an
                         import is started from with `train.init_from`, never resumed)
    config_changes.jsonl the harmless changes later restarts made (more steps, new intervals)
    checkpoints/         orbax checkpoints of the train state and the data position, by step
    damaged_checkpoints/ checkpoints that could not be restored, moved aside (never deleted)
    trainer.lock         who trains here now (host, pid, heartbeat): one writer per workdir
    memory_bank/         Santa's bank (python -m mats_jax.memory_bank)
    corpus/              the prepared corpus, when the run used the shipped one
    metrics.jsonl, tensorboard/, eval/

Listening and export need only the trained weights: `restore_weights` reads them without the
optimiser state, so they never build an optimiser.

`train.init_from` names a workdir (its newest checkpoint) or one checkpoint of it
(`WORKDIR/checkpoints/STEP`): a new run starts from its trainable weights (mapper, projector,
LoRA) with a fresh optimiser at step 0, if its model is this run's (`check_init_from`).
"""

from __future__ import annotations

import dataclasses
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
from mats_jax.runtime.fileio import atomic_file, output_command
from mats_jax.training.checkpoints import Checkpoints

CONFIG_FILE = "config.json"
CONFIG_CHANGES = "config_changes.jsonl"
CHECKPOINTS = "checkpoints"
DAMAGED_CHECKPOINTS = "damaged_checkpoints"
LOCK_FILE = "trainer.lock"
RUN_START = "run_start.json"
IMPORT_RECORD = "import.json"
IMPORT_COMMAND = "convert mats"  # the output marker of imports written before import.json
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
    "data.max_targets_per_row",
    "train.init_from",
)
# ... except these: how a step computes, not what its checkpoints hold (CLAP is not in them)
FREE_UNDER_FIXED = ("clap.text_dropout",)


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


def check_restart(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """The changes `config` makes to the run that wrote `workdir`'s config.json, {key: (old,
    new)}: only harmless ones. A change to what the checkpoints hold (FIXED_BY_CHECKPOINTS) is
    a ConfigError naming every such key, raised before anything is written."""
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
        if k.startswith(FIXED_BY_CHECKPOINTS) and k not in FREE_UNDER_FIXED
    }
    if fixed:
        listed = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in fixed.items())
        raise ConfigError(
            f"{workdir} holds checkpoints of another run ({listed}): "
            "use a new --workdir, or the values it was trained with"
        )
    return changes


# What the trainable parameters mean: a run started from another's weights must have the same.
MODEL = ("mapper.", "clap.dim", "lora.rank", "lora.alpha", "lora.targets")


@dataclasses.dataclass(frozen=True)
class InitSource:
    """The checkpoint a new run starts from (`train.init_from`)."""

    workdir: Path
    step: int
    imported_from: str | None  # the original checkpoint, when the workdir is an import

    @property
    def path(self) -> Path:
        return self.workdir / CHECKPOINTS / str(self.step)


def imported_from(workdir: Path) -> str | None:
    """The original checkpoint a `convert mats` workdir holds (its import.json, or the output
    marker of an older import); None for a training run."""
    record = Path(workdir) / IMPORT_RECORD
    if record.is_file():
        try:
            return str(json.loads(record.read_text())["source"])
        except (OSError, ValueError, KeyError, TypeError):
            return "an original MATS checkpoint"
    return "an original MATS checkpoint" if output_command(workdir) == IMPORT_COMMAND else None


def init_source(path: str) -> InitSource:
    """`train.init_from` resolved: a workdir means its newest checkpoint, `WORKDIR/checkpoints/
    STEP` that one. ConfigError (one line) when it is neither, or has no such checkpoint."""
    given = Path(path)
    if given.parent.name == CHECKPOINTS and given.name.isdigit():
        workdir, step = given.parent.parent, int(given.name)
    else:
        workdir, step = given, None
    if not (workdir / CONFIG_FILE).is_file():
        raise ConfigError(
            f"train.init_from: {path} is neither a workdir (it has no {CONFIG_FILE}) nor one of "
            f"its checkpoints (WORKDIR/{CHECKPOINTS}/STEP)"
        )
    steps = saved_steps(workdir)
    if not steps:
        raise ConfigError(f"train.init_from: {workdir} has no checkpoint")
    if step is not None and step not in steps:
        raise ConfigError(
            f"train.init_from: {workdir} has no checkpoint {step} (it has "
            f"{', '.join(map(str, steps))})"
        )
    return InitSource(
        workdir.absolute(), steps[-1] if step is None else step, imported_from(workdir)
    )


def start_of_run(workdir: Path, config: ml_collections.ConfigDict) -> InitSource | None:
    """What a trainer on `workdir` starts from: None to resume its checkpoints (or to start
    afresh), `train.init_from`'s checkpoint for a new run (checked: `check_init_from`). An import
    given as --workdir is a ConfigError saying to start from it instead: it holds no data
    position or optimiser of a run, and training it in place would hide where it came from."""
    imported = imported_from(workdir)
    if imported is not None:
        raise ConfigError(
            f"{workdir} is an import of {imported} (python -m mats_jax.convert mats), not a run "
            f"to resume: train from it in a new --workdir with --config.train.init_from={workdir}"
        )
    if saved_steps(workdir) or not config.train.init_from:
        return None
    source = init_source(config.train.init_from)
    check_init_from(source, config)
    return source


def check_init_from(source: InitSource, config: ml_collections.ConfigDict) -> None:
    """ConfigError (one line, naming the key) unless the run that wrote `source` has this run's
    model (`MODEL`); the parameter shapes are checked again on restore
    (`Checkpoints.restore_trainable`)."""
    old = _flat(read_config(source.workdir).to_dict())
    new = _flat(json.loads(config.to_json_best_effort()))
    for key in sorted(old.keys() | new.keys()):
        if key.startswith(MODEL) and old.get(key) != new.get(key):
            raise ConfigError(
                f"train.init_from: {source.path} was trained with {key} {old.get(key)!r}, this "
                f"run has {new.get(key)!r}"
            )


def restore_init_from(
    source: InitSource, config: ml_collections.ConfigDict, trainable: nnx.State
) -> nnx.State:
    """The trainable parameters of `source`, laid out like `trainable` (collective)."""
    manager = checkpoints(source.workdir, config)
    try:
        return manager.restore_trainable(source.step, trainable)
    finally:
        manager.close()


def record_run_start(workdir: Path, source: InitSource) -> None:
    """run_start.json: this run started from `source`'s weights, a fresh optimiser, step 0."""
    record = {
        "init_from": str(source.path),
        "workdir": str(source.workdir),
        "step": source.step,
        "imported_from": source.imported_from,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with atomic_file(Path(workdir) / RUN_START, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


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
