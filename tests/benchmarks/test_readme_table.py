"""benchmarks/readme_table.py: the README's table states exactly the result files' figures and
machines, --check catches a stale README, and an unreadable result file is one line naming it."""

import json
from pathlib import Path

import pytest

from benchmarks import readme_table

CPU = {
    "cpu": "Test CPU 9000",
    "cores": 3,
    "accelerator": None,
    "jax": "0.1",
    "torch": "2.0",
    "date": "2030-01-02T03:04:05+00:00",
}
CLAP = {
    "benchmark": "clap",
    "machine": CPU,
    "rows": [{"what": "audio b8", "ours_s": 0.5, "torch_s": 2.0}],
}
LISTENING = {
    "benchmark": "generate_audio",
    "machine": {**CPU, "accelerator": "Test GPU X1"},
    "clips": 16,
    "batch": 8,
    "ours_clips_per_s": 3.0,
    "pytorch_clips_per_s": 1.5,
}
EXPECTED_ROWS = [
    "| clap | CLAP audio b8, vs msclap | 0.5 s | 2 s | 4x "
    "| Test CPU 9000 (3 cores); jax 0.1, torch 2.0; 2030-01-02 |",
    "| generate_audio | listening end to end, 16 clips, batch 8, vs PyTorch original "
    "| 3 clips/s | 1.5 clips/s | 2x "
    "| Test GPU X1 + Test CPU 9000 (3 cores); jax 0.1, torch 2.0; 2030-01-02 |",
]
STALE = f"# Project\n\nabove\n\n{readme_table.BEGIN}\nan old table\n{readme_table.END}\n\nbelow\n"


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    """(a results folder holding CLAP and LISTENING, a README whose table is stale)."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "clap.json").write_text(json.dumps(CLAP))
    (results / "generate_audio.json").write_text(json.dumps(LISTENING))
    readme = tmp_path / "README.md"
    readme.write_text(STALE)
    return results, readme


def run(results: Path, readme: Path, *flags: str) -> int:
    return readme_table.main(["--results", str(results), "--readme", str(readme), *flags])


def test_the_table_states_the_results_and_the_machines(paths):
    results, readme = paths
    assert run(results, readme) == 0
    text = readme.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == EXPECTED_ROWS  # rows[0]: the header
    assert text.startswith("# Project\n\nabove\n\n") and text.endswith("\n\nbelow\n")
    assert "an old table" not in text


def test_check_fails_on_a_stale_readme_and_passes_once_regenerated(paths):
    results, readme = paths
    assert run(results, readme, "--check") == 1
    assert readme.read_text() == STALE  # --check writes nothing
    assert run(results, readme) == 0
    assert run(results, readme, "--check") == 0


def test_no_results_folder_says_there_are_none(tmp_path, paths):
    _, readme = paths
    assert run(tmp_path / "absent", readme) == 0
    assert readme_table.NO_RESULTS in readme.read_text()


def test_a_malformed_result_is_one_line_naming_the_file(paths, capsys):
    results, readme = paths
    bad = results / "broken.json"
    bad.write_text('{"benchmark": "clap", ')
    assert run(results, readme) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(bad) in error
    assert readme.read_text() == STALE
