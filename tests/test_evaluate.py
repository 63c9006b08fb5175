"""`python -m mats_jax.evaluate` on a tiny trained workdir (random CLAP): each kind of benchmark
runs end to end on real clips, writes its report, says the numbers mean nothing, and skips what
it cannot read or find."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mats_jax.evaluate import main
from tests.support.outputs import marker_command, one_line, other_files, snapshot
from tests.support.paths import ESC50, ROOT, shared


def clips(folder: Path, names: list[str]) -> None:
    """Copies of real ESC-50 clips under the given names."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in zip(sorted(shared(ESC50).glob("*.wav")), names):
        shutil.copy(source, folder / name)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def evaluate(workdir: Path, out: Path, *args: str) -> dict:
    assert main(["--workdir", str(workdir), "--max-new-tokens", "4", "--out", str(out), *args]) == 0
    return json.loads((out / "report.json").read_text()) | {"out": out}


@pytest.mark.slow
def test_classification_reports_accuracies_and_a_confusion_matrix(
    listening_workdir, tmp_path, capsys
):
    data = tmp_path / "esc50"
    names = ["4-161099-A-47.wav", "4-161100-A-47.wav"]
    clips(data, names)
    (data / "4-999-A-0.wav").write_text("not audio")
    write_csv(
        data / "labels.csv",
        ["filename", "label"],
        [
            [names[0], "airplane"],
            [names[1], "airplane"],
            ["4-999-A-0.wav", "dog"],
            ["4-404-A-1.wav", "rooster"],
        ],
    )
    report = evaluate(
        listening_workdir, tmp_path / "esc50-out", "--benchmark", "esc50", "--data", str(data)
    )
    assert report["examples"] == 2
    assert set(report["skipped"]) == {"4-999-A-0.wav", "4-404-A-1.wav"}
    assert set(report["metrics"]) == {"accuracy_clap", "accuracy_exact", "accuracy_substring"}
    assert "RANDOM" in report["note"] and report["santa"] is True
    assert (report["out"] / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    confusion = json.loads((report["out"] / "confusion.json").read_text())
    assert confusion["classes"] == ["airplane", "dog", "rooster"]
    assert sum(map(sum, confusion["matrix"])) == 2
    assert "| accuracy_clap |" in (report["out"] / "report.md").read_text()
    assert "4-999-A-0.wav" in capsys.readouterr().err


@pytest.mark.slow
def test_captioning_and_qa(listening_workdir, tmp_path):
    data = tmp_path / "clotho"
    clips(data, ["Santa Motor.wav", "Radio Garble.wav"])
    write_csv(
        data / "test.csv",
        ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
        [
            ["Santa Motor.wav"] + ["a machine whines and squeals"] * 5,
            ["Radio Garble.wav"] + ["people talk over a radio"] * 5,
        ],
    )
    report = evaluate(
        listening_workdir,
        tmp_path / "clotho-out",
        "--benchmark",
        "clotho",
        "--data",
        str(data),
        "--no-santa",
    )
    assert report["examples"] == 2 and report["santa"] is False
    assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"} <= set(report["metrics"])
    assert {"SPICE", "SPIDEr"} <= set(report["metrics"]) | set(report["unavailable"])

    write_csv(
        data / "binary_test_eng.csv",
        ["file_name", "QuestionText", "answer"],
        [["Santa Motor.wav", "Is a machine running?", a] for a in ("YES", "YES", "NO")]
        + [["Radio Garble.wav", "Is it raining?", a] for a in ("NO", "NO", "NO")],
    )
    report = evaluate(
        listening_workdir, tmp_path / "aqa-out", "--benchmark", "clotho_aqa", "--data", str(data)
    )
    predictions = [
        json.loads(line) for line in (report["out"] / "predictions.jsonl").read_text().splitlines()
    ]
    assert [p["question"] for p in predictions] == ["Is a machine running?", "Is it raining?"]
    assert set(report["metrics"]) == {"accuracy", "accuracy_any_annotator"}


def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--benchmark", "us8k", "--data", str(tmp_path)]) == 1
    assert "UrbanSound8K.csv" in capsys.readouterr().err
    write_csv(tmp_path / "labels.csv", ["filename", "label"], [["gone.wav", "dog"]])
    assert main(["--workdir", str(tmp_path), "--benchmark", "esc50", "--data", str(tmp_path)]) == 1
    assert "no audio for any of the 1 esc50 examples" in capsys.readouterr().err


@pytest.mark.slow
def test_outputs_are_never_destroyed(listening_workdir, tmp_path, capsys):
    data = tmp_path / "esc50"
    names = ["4-161099-A-47.wav", "4-161100-A-47.wav"]
    clips(data, names)
    write_csv(data / "labels.csv", ["filename", "label"], [[n, "airplane"] for n in names])
    args = ["--workdir", str(listening_workdir), "--max-new-tokens", "4"]
    args += ["--benchmark", "esc50", "--data", str(data)]

    def evaluate_into(out, *extra):
        code = main(args + ["--out", str(out), *extra])
        return code, capsys.readouterr().err

    for target in (listening_workdir, other_files(tmp_path / "others")):
        before = snapshot(target)
        code, err = evaluate_into(target, "--overwrite")
        assert code == 1
        assert one_line(err) == (
            f"error: {target} exists and is not a previous `evaluate` output; choose another --out"
        )
        assert snapshot(target) == before

    out = tmp_path / "report"
    assert evaluate_into(out)[0] == 0
    assert marker_command(out) == "evaluate"
    (out / "stale.txt").write_text("from the first evaluation")
    before = snapshot(out)
    code, err = evaluate_into(out)
    assert code == 1
    assert one_line(err) == (
        f"error: {out} is a previous `evaluate` output; pass --overwrite to replace it"
    )
    assert snapshot(out) == before
    assert evaluate_into(out, "--overwrite")[0] == 0
    assert not (out / "stale.txt").exists() and (out / "report.json").is_file()

    # the default --out, WORKDIR/eval/BENCHMARK-stepN, is checked as soon as the step is known
    workdir = tmp_path / "workdir"
    shutil.copytree(listening_workdir, workdir)
    default = other_files(workdir / "eval" / "esc50-step2")
    before = snapshot(workdir)
    workdir_args = ["--workdir", str(workdir), *args[2:], "--overwrite"]
    assert main(workdir_args) == 1
    assert one_line(capsys.readouterr().err) == (
        f"error: {default} exists and is not a previous `evaluate` output; choose another --out"
    )
    assert snapshot(workdir) == before


LAUNCH = ROOT / "launch" / "local_multiprocess.sh"


def evaluate_launched(workdir: Path, data: Path, out: Path, processes: int, devices: int) -> dict:
    """report.json of `python -m mats_jax.evaluate` run as `processes` × `devices` (gloo)."""
    subprocess.run(
        [str(LAUNCH), "-n", str(processes), "-d", str(devices), "--", sys.executable]
        + ["-m", "mats_jax.evaluate", "--workdir", str(workdir), "--benchmark", "esc50"]
        + ["--data", str(data), "--out", str(out), "--max-new-tokens", "3", "--batch-size", "5"],
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=600,
    )
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_two_processes_evaluate_like_one_with_all_devices(listening_workdir, tmp_path):
    data = tmp_path / "esc50"
    data.mkdir()
    sources = sorted(shared(ESC50).glob("*.wav"))[:6]
    for source in sources:
        shutil.copy(source, data / source.name)
    (data / "4-999-A-0.wav").write_text("not audio")  # a bad file in one process's share
    labels = ["dog", "rooster", "airplane", "dog", "rain", "airplane", "dog"]
    names = [s.name for s in sources[:3]] + ["4-999-A-0.wav"] + [s.name for s in sources[3:]]
    with (data / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["filename", "label"], *zip(names, labels)])

    one = evaluate_launched(listening_workdir, data, tmp_path / "one", 1, 4)
    two = evaluate_launched(listening_workdir, data, tmp_path / "two", 2, 2)
    assert one["examples"] == 6 and set(one["skipped"]) == {"4-999-A-0.wav"}
    assert two == one
    predictions = "predictions.jsonl"
    assert (tmp_path / "two" / predictions).read_text() == (
        tmp_path / "one" / predictions
    ).read_text()
