"""`python -m mats_jax.generate` on a (tiny) trained workdir: one line per readable file, a bad
file reported and skipped, JSONL written; Santa used when the workdir has a memory bank."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mats_jax.generate import main
from mats_jax.listen import postprocess
from tests.train.test_resume import command, setup  # noqa: F401  (the tiny LLM + corpus fixture)

ROOT = Path(__file__).resolve().parents[1]
CLIPS = sorted((ROOT.parent / "shared" / "data" / "audio" / "esc50").glob("*.wav"))[:2]


def test_postprocess_is_the_papers():
    assert postprocess("a dog barks ,then a car passes,and birds sing  ") == \
        "A dog barks, then a car passes, and birds sing"
    assert postprocess("café crème") == "Cafe creme"


@pytest.mark.slow
def test_generate_from_a_trained_workdir(setup, tmp_path, capsys):
    tmp, llm = setup
    workdir = tmp_path / "work"
    run = command(workdir, llm, tmp / "corpus")
    run = [a for a in run if not a.startswith("--config.train.steps")] + ["--config.train.steps=2"]
    subprocess.run(run, check=True, capture_output=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "mats_jax.memory_bank", f"--config={ROOT / 'configs' / 'default.py'}",
                    f"--workdir={workdir}", f"--config.data.corpus={tmp / 'corpus'}",
                    "--config.santa.bank_size=40", "--config.santa.clusters=4", "--config.santa.top_l=4"],
                   check=True, capture_output=True, cwd=ROOT)
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in CLIPS:
        (folder / clip.name).write_bytes(clip.read_bytes())
    (folder / "broken.wav").write_text("not audio")
    code = main(["--workdir", str(workdir), "--audio", str(folder), "--out", str(tmp_path / "out.jsonl")])
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
