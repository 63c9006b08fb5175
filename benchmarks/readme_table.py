"""The README's performance table, regenerated from the benchmarks' result files.

Run:  .venv/bin/python benchmarks/readme_table.py [--results benchmarks/results]
      [--readme README.md] [--check]

Every `benchmarks/*.py --json benchmarks/results/NAME.json` writes one result file that names
its benchmark and the machine it ran on (`benchmarks/common.py` `print_json`). This script reads
every `*.json` in `--results`, renders one markdown table (benchmark, what is compared, ours,
reference, ratio, machine) and writes it into the README between `BEGIN` and `END`, so that no
figure in the README is typed by hand. `COMPARISONS` says, per benchmark, where its rows are in
its JSON and which of each row's values are ours and the reference's. `--check` writes nothing
and exits 1 when the README differs from what it would write.

Exit status: 0 done (or up to date), 1 out of date (`--check`), 2 a result file or the README
could not be read (one line naming the file).
"""

from __future__ import annotations

import argparse
import json
import math
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

from benchmarks.common import fmt  # noqa: E402

BEGIN = "<!-- benchmarks:begin -->"
END = "<!-- benchmarks:end -->"


@dataclass(frozen=True)
class Comparison:
    """One kind of table row of a benchmark. Fields are `str.format` field names (`key`,
    `key[0][sub]`) looked up in the result JSON (`rows`) or in one row (`what`, `ours`,
    `reference`)."""

    rows: tuple[str, ...]  # each a row or a list of rows; () the whole JSON is one row
    what: str  # a str.format template over the row: what is compared
    ours: str
    reference: str
    reference_name: str
    unit: str
    higher_is_faster: bool  # throughputs; times are lower-is-faster


def times(*fields: Any) -> Comparison:
    """A comparison of times (the reference's over ours is the ratio)."""
    return Comparison(*fields, higher_is_faster=False)


def rates(*fields: Any) -> Comparison:
    """A comparison of throughputs (ours over the reference's is the ratio)."""
    return Comparison(*fields, higher_is_faster=True)


COMPARISONS: dict[str, tuple[Comparison, ...]] = {
    "clap": (times(("rows",), "CLAP {what}", "ours_s", "torch_s", "msclap", "s"),),
    "lm_forward": (times(("rows",), "SmolLM2 {what}", "ours_s", "torch_s", "PyTorch/peft", "s"),),
    "lm_generate": (
        rates(
            ("greedy", "beam-4"),
            "SmolLM2 {mode} generate, {new_tokens} new tokens",
            "ours_tok_s",
            "hf_tok_s",
            "transformers",
            "tokens/s",
        ),
    ),
    "train_step": (times(("rows",), "{what}", "ours_s", "torch_s", "PyTorch/peft", "s"),),
    # its rows: ours packed, ours unpacked, PyTorch (batches of setup[batch] examples)
    "train_throughput": (
        rates(
            (),
            "training, ours packed ({setup[rows]} x {setup[row_length]} rows)",
            "rows[0][examples_s]",
            "rows[2][examples_s]",
            "PyTorch/peft",
            "examples/s",
        ),
        rates(
            (),
            "training, ours unpacked (batch {setup[batch]})",
            "rows[1][examples_s]",
            "rows[2][examples_s]",
            "PyTorch/peft",
            "examples/s",
        ),
    ),
    "santa": (
        times(
            ("retrieval",),
            "Santa retrieval, bank {bank}, member_batch {member_batch}",
            "ours_ms",
            "original_ms",
            "original (PyTorch)",
            "ms",
        ),
        times(("kmeans",), "k-means, {points} points", "ours_s", "torch_s", "PyTorch", "s"),
    ),
    "generate_audio": (
        rates(
            (),
            "listening end to end, {clips} clips, batch {batch}",
            "ours_clips_per_s",
            "pytorch_clips_per_s",
            "PyTorch original",
            "clips/s",
        ),
    ),
    # nothing to compare: their results are read, and add no row
    "decode_profile": (),
    "ceilings": (),
}

HEADER = (
    "| benchmark | what is compared | ours | reference | ratio | machine |\n"
    "|---|---|---|---|---|---|"
)
NO_RESULTS = (
    "_No results yet: run a benchmark with `--json benchmarks/results/NAME.json`, then "
    "`python benchmarks/readme_table.py`._"
)
RATIO_NOTE = "ratio: how many times faster ours is than the reference (above 1: ours is faster)."


class ResultError(Exception):
    """A result file (or the README) that cannot be read; the message names it."""


def field(source: dict[str, Any], name: str, path: Path) -> Any:
    """`source`'s value at the str.format field name `name` (e.g. `rows[0][examples_s]`)."""
    try:
        return string.Formatter().get_field(name, (), source)[0]
    except (KeyError, IndexError, TypeError):
        raise ResultError(f"{path}: no {name!r}") from None


def number(source: dict[str, Any], name: str, path: Path) -> float:
    value = field(source, name, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResultError(f"{path}: {name!r} is {value!r}, not a number")
    return float(value)


def machine_name(result: dict[str, Any], path: Path) -> str:
    """The machine as a table cell: accelerator, CPU and cores, versions, date."""
    m = field(result, "machine", path)
    cpu = f"{field(m, 'cpu', path)} ({field(m, 'cores', path)} cores)"
    accelerator = field(m, "accelerator", path)  # None on a CPU
    hardware = f"{accelerator} + {cpu}" if accelerator else cpu
    versions = f"jax {field(m, 'jax', path)}, torch {field(m, 'torch', path)}"
    return f"{hardware}; {versions}; {str(field(m, 'date', path))[:10]}"


def read_result(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultError(f"{path}: cannot read it as JSON ({error})") from None
    if not isinstance(result, dict):
        raise ResultError(f"{path}: a {type(result).__name__}, not a JSON object")
    return result


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_rows(path: Path) -> list[str]:
    """The table rows of one result file."""
    result = read_result(path)
    benchmark = field(result, "benchmark", path)
    if benchmark not in COMPARISONS:
        raise ResultError(f"{path}: unknown benchmark {benchmark!r} (add it to COMPARISONS)")
    machine = machine_name(result, path)
    lines = []
    for comparison in COMPARISONS[benchmark]:
        found = [field(result, name, path) for name in comparison.rows] or [result]
        rows = [row for value in found for row in (value if isinstance(value, list) else [value])]
        for row in rows:
            try:
                what = comparison.what.format(**row)
            except (KeyError, IndexError, TypeError) as error:
                raise ResultError(
                    f"{path}: cannot fill {comparison.what!r} ({type(error).__name__}: {error})"
                ) from None
            ours = number(row, comparison.ours, path)
            reference = number(row, comparison.reference, path)
            top, bottom = (ours, reference) if comparison.higher_is_faster else (reference, ours)
            ratio = top / bottom if bottom else math.nan  # above 1: ours is faster
            cells = [
                benchmark,
                f"{what}, vs {comparison.reference_name}",
                f"{fmt(ours)} {comparison.unit}",
                f"{fmt(reference)} {comparison.unit}",
                f"{fmt(ratio)}x" if math.isfinite(ratio) else "n/a",
                machine,
            ]
            lines.append("| " + " | ".join(map(cell, cells)) + " |")
    return lines


def render(results: Path) -> str:
    """The generated block (markers excluded): the table of every result file, by file name."""
    paths = sorted(results.glob("*.json")) if results.is_dir() else []
    lines = [line for path in paths for line in table_rows(path)]
    if not lines:
        return NO_RESULTS
    return "\n".join([HEADER, *lines, "", RATIO_NOTE])


def updated_readme(readme: str, block: str, path: Path) -> str:
    """`readme` with the text between BEGIN and END replaced by `block`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ResultError(f"{path}: no {BEGIN} ... {END} markers")
    return readme[: start + len(BEGIN)] + "\n" + block + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the README is out of date, write nothing"
    )
    args = parser.parse_args(argv)
    try:
        current = args.readme.read_text()
        new = updated_readme(current, render(args.results), args.readme)
    except (OSError, ResultError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if new != current:
            print(
                f"{args.readme} is out of date: run python benchmarks/readme_table.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.readme} is up to date")
        return 0
    args.readme.write_text(new)
    print(f"wrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
