"""An evaluation's output folder: the report, the predictions and the scorers' own files."""

import json

from mats_jax.evaluation import report
from tests.support.outputs import marker_command

SUMMARY = {
    "benchmark": "mmau",
    "workdir": "w",
    "step": 3,
    "examples": 1,
    "skipped": {},
    "santa": False,
    "metrics": {"accuracy": 0.5, "accuracy/task/sound": 1.0},
    "unavailable": {"SPICE": "no jars"},
    "note": "",
}


def test_report_folder_holds_the_extra_files_beside_the_report(tmp_path):
    out = tmp_path / "out"
    files = {"mmau_predictions.json": '[{"id": "q1"}]\n'}
    report.write(out, SUMMARY, [{"clip": "a.wav", "prediction": "one"}], files=files)
    assert json.loads((out / "report.json").read_text())["metrics"]["accuracy"] == 0.5
    assert (out / "mmau_predictions.json").read_text() == '[{"id": "q1"}]\n'
    assert marker_command(out) == "evaluate"
    markdown = (out / "report.md").read_text()
    assert "| accuracy/task/sound | 1.0000 |" in markdown
    assert "| SPICE | unavailable |" in markdown and "- SPICE: no jars" in markdown
