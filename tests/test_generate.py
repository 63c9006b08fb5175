"""`python -m mats_jax.generate` on a (tiny) trained workdir: one line per readable file, a bad
file reported and skipped, JSONL written; Santa used when the workdir has a memory bank."""

import json
from pathlib import Path

import pytest

from mats_jax.generate import main
from mats_jax.inference.listener import postprocess
from tests.support.paths import ESC50

CLIPS = sorted(ESC50.glob("*.wav"))[:2]


def test_postprocess_is_the_papers():
    assert (
        postprocess("a dog barks ,then a car passes,and birds sing  ")
        == "A dog barks, then a car passes, and birds sing"
    )
    assert postprocess("café crème") == "Cafe creme"


@pytest.mark.slow
def test_generate_from_a_trained_workdir(listening_workdir, tmp_path, capsys):
    workdir = listening_workdir
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in CLIPS:
        (folder / clip.name).write_bytes(clip.read_bytes())
    (folder / "broken.wav").write_text("not audio")
    code = main(
        ["--workdir", str(workdir), "--audio", str(folder), "--out", str(tmp_path / "out.jsonl")]
    )
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.strip().splitlines()
    assert [Path(line.split("\t")[0]).name for line in lines] == [c.name for c in CLIPS]
    assert "broken.wav" in err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in rows] == [c.name for c in CLIPS]
    assert main(["--workdir", str(tmp_path / "nowhere"), "--audio", str(folder)]) == 1
    assert main(["--workdir", str(workdir), "--audio", str(folder), "--task", "QA"]) == 1
    assert "needs a question" in capsys.readouterr().err

    # one checkpoint folder names the model as well as the workdir does
    assert (
        main(
            [
                "--checkpoint",
                str(workdir / "checkpoints" / "2"),
                "--audio",
                str(CLIPS[0]),
                "--no-santa",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(str(CLIPS[0]))
    assert main(["--checkpoint", str(workdir), "--audio", str(CLIPS[0])]) == 1
    assert "not a checkpoint folder" in capsys.readouterr().err
