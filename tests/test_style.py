"""The tree stays as ruff formats and lints it (pyproject.toml [tool.ruff])."""

import subprocess
import sys

from tests.support.paths import ROOT

TREES = ["mats_jax", "tests", "benchmarks", "configs"]


def test_ruff_finds_no_lint():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", *TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_ruff_format_changes_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
