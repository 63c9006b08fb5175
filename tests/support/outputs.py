"""What the output tests share: folders a command must never replace, and exact snapshots of
what a path holds, to show that a refused write touched nothing."""

from __future__ import annotations

import json
from pathlib import Path

from mats_jax.runtime.fileio import MARKER


def snapshot(path: Path) -> dict[str, bytes | None]:
    """{relative path: bytes (None for a folder)} of everything under `path` (or of the file
    `path` itself, under "."); {} when nothing is there."""
    if path.is_file():
        return {".": path.read_bytes()}
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def other_files(folder: Path) -> Path:
    """A folder of someone else's files (a report, notes, a subfolder): no command's output."""
    (folder / "sub").mkdir(parents=True)
    (folder / "report.json").write_text('{"mine": true}\n')
    (folder / "notes.txt").write_text("do not delete\n")
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return folder


def fake_workdir(folder: Path) -> Path:
    """A folder laid out like a training workdir (config.json, a checkpoint, metrics.jsonl)."""
    (folder / "checkpoints" / "3").mkdir(parents=True)
    (folder / "config.json").write_text('{"config_version": 2}\n')
    (folder / "checkpoints" / "3" / "state").write_bytes(b"\x00\x01weights")
    (folder / "metrics.jsonl").write_text('{"step": 3, "train/loss": 1.5}\n')
    return folder


def marker_command(folder: Path) -> str:
    """The command named by the output marker of `folder` (KeyError/FileNotFoundError if none)."""
    return json.loads((folder / MARKER).read_text())["command"]


def one_line(err: str) -> str:
    """The one `error: ...` line a refused command printed (asserts there is exactly one)."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]
