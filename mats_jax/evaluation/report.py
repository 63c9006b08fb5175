"""An evaluation's outputs: report.json, report.md, predictions.jsonl and, for classification,
confusion.png, and for MMAU and AIR-Bench their predictions in the layout of their own scorers —
written into a temporary folder that becomes the output folder only when
complete. An existing folder is replaced only when it is a previous evaluation's (its marker
says so) and overwrite is true (`mats_jax.runtime.fileio.atomic_directory`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mats_jax.runtime.fileio import atomic_directory, check_directory

COMMAND = "evaluate"  # the marker of the folders `write` makes

RANDOM_CLAP_NOTE = (
    "CLAP weights are RANDOM (no CLAP checkpoint was given): the model cannot hear "
    "anything, and these numbers mean nothing beyond showing that the pipeline runs."
)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['benchmark']} — {report['workdir']} (step {report['step']})", ""]
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    lines += [
        f"{report['examples']} examples scored; {len(report['skipped'])} clips skipped "
        f"(no audio or unreadable). Santa: {'on' if report['santa'] else 'off'}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.4f} |" for name, value in report["metrics"].items()]
    lines += [f"| {name} | unavailable |" for name in report["unavailable"]]
    if report["unavailable"]:
        lines += ["", *(f"- {name}: {why}" for name, why in report["unavailable"].items())]
    return "\n".join(lines) + "\n"


def confusion_plot(confusion: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    from matplotlib import pyplot as plt

    size = max(6.0, 0.22 * len(classes))
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    axes.set_yticks(range(len(classes)), classes, fontsize=6)
    axes.set_xlabel("predicted (nearest class by CLAP text similarity)")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_out(out: Path, *, overwrite: bool = False) -> None:
    """Raises OutputExistsError unless `write` may write `out`: call it before the work."""
    check_directory(out, command=COMMAND, overwrite=overwrite)


def write(
    out: Path,
    report: dict[str, Any],
    predictions: list[dict[str, Any]],
    confusion: tuple[np.ndarray, Sequence[str]] | None = None,
    *,
    files: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> None:
    """`files`: more {name: text} to write beside the report."""
    with atomic_directory(out, command=COMMAND, overwrite=overwrite) as folder:
        for name, text in (files or {}).items():
            (folder / name).write_text(text, encoding="utf-8")
        (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (folder / "report.md").write_text(markdown(report))
        (folder / "predictions.jsonl").write_text(
            "".join(json.dumps(p) + "\n" for p in predictions)
        )
        if confusion is not None:
            matrix, classes = confusion
            (folder / "confusion.json").write_text(
                json.dumps({"classes": list(classes), "matrix": matrix.tolist()}) + "\n"
            )
            confusion_plot(
                matrix, classes, folder / "confusion.png", f"{report['benchmark']} confusion"
            )
