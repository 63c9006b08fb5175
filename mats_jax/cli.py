"""What the config-driven entry points (train, memory_bank) share: absl flag parsing that turns a
bad --config override into one line, and `run` that reports the command's own errors likewise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections
from absl import app, flags, logging


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        fail(f"cannot apply the --config overrides: {type(e).__name__} {e} (unknown key or wrong type)")


def run(command: Callable[[ml_collections.ConfigDict, Path], object], config_flag, workdir_flag,
        errors: tuple[type[Exception], ...]) -> None:
    """app.run `command(config, workdir)`; `errors` are reported as one line, exit status 2."""

    def main(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:  # orbax logs every file it writes at INFO
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            fail(f"unexpected arguments: {argv[1:]}")
        if config_flag.value is None or workdir_flag.value is None:
            fail("--config and --workdir are required")
        try:
            command(config_flag.value, Path(workdir_flag.value))
        except errors as e:
            fail(str(e))

    app.run(main, flags_parser=parse_flags)
