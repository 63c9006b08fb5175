"""What the commands share, so that bad input is always one line and a non-zero exit.

Config-driven commands (train, memory_bank, aot) parse absl flags with `parse_flags` (a bad
--config override becomes one line) and run through `run`, which joins a multi-process cluster
before any device is used (`mats_jax.runtime.distributed`). The argparse commands (generate,
evaluate, embed, export, lm, convert) wrap their `main` in `reports_input_errors` and take counts
with `positive_int` / `non_negative_int`.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mats_jax.runtime import distributed
from mats_jax.runtime.errors import InputError, RunError

# defined once here, so that several commands can be imported into one process (tests, notebooks)
CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<name>.py", lock_config=True)
WORKDIR = flags.DEFINE_string(
    "workdir", None, "the run's folder: checkpoints, metrics, caches, the memory bank"
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    f"HOST:PORT of process 0, for a multi-process run (or ${distributed.ENV_COORDINATOR})",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"processes in the run (or ${distributed.ENV_NUM_PROCESSES})"
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, f"this process, 0-based (or ${distributed.ENV_PROCESS_ID})"
)
_TIMEOUT = flags.DEFINE_integer(
    "coordinator_timeout",
    None,
    f"seconds to wait for every process (default {distributed.DEFAULT_TIMEOUT_S}, "
    f"or ${distributed.ENV_TIMEOUT})",
)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        fail(
            f"cannot apply the --config overrides: {type(e).__name__} {e} "
            "(unknown key or wrong type)"
        )


INPUT_ERRORS = (InputError, FileNotFoundError, FileExistsError)


def run(command: Callable[[ml_collections.ConfigDict, Path], object]) -> None:
    """app.run `command(--config, --workdir)` in every process of the run; bad input (INPUT_ERRORS),
    a run that cannot go on (RunError) and a cluster that cannot form are reported as one line,
    exit status 2. Processes other than 0 log only errors: process 0 speaks for the run."""

    def main(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:  # orbax logs every file it writes at INFO
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            fail(f"unexpected arguments: {argv[1:]}")
        if CONFIG.value is None or WORKDIR.value is None:
            fail("--config and --workdir are required")
        try:
            joined = distributed.initialize(
                _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _TIMEOUT.value
            )
            # one process: no device is touched here, so a config error stays the only output
            if joined.method != "single" and not distributed.is_process_zero():
                logging.set_verbosity(logging.ERROR)
            command(CONFIG.value, Path(WORKDIR.value))
        except (distributed.DistributedError, RunError, *INPUT_ERRORS) as e:
            fail(str(e))

    app.run(main, flags_parser=parse_flags)


def reports_input_errors(
    main: Callable[[list[str] | None], int],
) -> Callable[[list[str] | None], int]:
    """An argparse command's `main(argv) -> exit status`, with bad input (INPUT_ERRORS) printed as
    `error: ...` on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except INPUT_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return wrapped


def positive_int(text: str) -> int:
    """argparse type: a count >= 1 (a bad one is a usage error naming the flag)."""
    return _integer(text, least=1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, least=0)


def _integer(text: str, *, least: int) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
    return value
