"""`python -m mats_jax.generate` on a (tiny) trained workdir: one line per readable file, a bad
file reported and skipped, JSONL written; Santa used when the workdir has a memory bank."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mats_jax.generate import main
from mats_jax.inference.listener import postprocess
from tests.support.outputs import one_line, other_files, snapshot
from tests.support.paths import ESC50, ROOT, shared


def test_postprocess_is_the_papers():
    assert (
        postprocess("a dog barks ,then a car passes,and birds sing  ")
        == "A dog barks, then a car passes, and birds sing"
    )
    assert postprocess("café crème") == "Cafe creme"


@pytest.mark.slow
def test_generate_from_a_trained_workdir(listening_workdir, tmp_path, capsys):
    clips = sorted(shared(ESC50).glob("*.wav"))[:2]
    workdir = listening_workdir
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in clips:
        (folder / clip.name).write_bytes(clip.read_bytes())
    (folder / "broken.wav").write_text("not audio")
    code = main(
        ["--workdir", str(workdir), "--audio", str(folder), "--out", str(tmp_path / "out.jsonl")]
    )
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.strip().splitlines()
    assert [Path(line.split("\t")[0]).name for line in lines] == [c.name for c in clips]
    assert "broken.wav" in err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in rows] == [c.name for c in clips]
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
                str(clips[0]),
                "--no-santa",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(str(clips[0]))
    assert main(["--checkpoint", str(workdir), "--audio", str(clips[0])]) == 1
    assert "not a checkpoint folder" in capsys.readouterr().err


@pytest.mark.slow
def test_outputs_are_never_destroyed(listening_workdir, tmp_path, capsys):
    clip = sorted(shared(ESC50).glob("*.wav"))[0]
    workdir_before = snapshot(listening_workdir)

    def generate(audio, out, *extra):
        args = ["--workdir", str(listening_workdir), "--audio", str(audio), "--out", str(out)]
        code = main(args + list(extra))
        return code, capsys.readouterr().err

    for target in (listening_workdir, other_files(tmp_path / "others")):
        before = snapshot(target)
        code, err = generate(clip, target, "--overwrite")
        assert code == 1
        assert one_line(err) == f"error: {target} exists and is not a file; choose another --out"
        assert snapshot(target) == before

    out = tmp_path / "old.jsonl"
    old = '{"file": "earlier.wav", "task": "caption", "text": "kept"}\n'
    out.write_text(old)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken.wav").write_text("not audio")
    cases = ((empty, "no audio files", ()), (broken, "none of the 1 audio files", ("--overwrite",)))
    for folder, says, extra in cases:
        code, err = generate(folder, out, *extra)
        assert code == 1
        line = one_line(err)
        assert says in line and line.endswith(f"; {out} not written")
        assert out.read_text() == old

    code, err = generate(clip, out)
    assert code == 1
    assert one_line(err) == f"error: {out} exists; pass --overwrite to replace it"
    assert out.read_text() == old
    assert generate(clip, out, "--overwrite")[0] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in rows] == [clip.name]
    assert snapshot(listening_workdir) == workdir_before


def generate_launched(workdir: Path, audio: Path, out: Path, processes: int, devices: int) -> str:
    """The JSONL `python -m mats_jax.generate` writes when run as `processes` × `devices`."""
    subprocess.run(
        [str(ROOT / "launch" / "local_multiprocess.sh"), "-n", str(processes), "-d", str(devices)]
        + ["--", sys.executable, "-m", "mats_jax.generate", "--workdir", str(workdir)]
        + ["--audio", str(audio), "--out", str(out), "--batch-size", "5"],
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=600,
        capture_output=True,
    )
    return out.read_text()


@pytest.mark.slow
def test_two_processes_generate_like_one_with_all_devices(listening_workdir, tmp_path):
    audio = tmp_path / "clips"
    audio.mkdir()
    for source in sorted(shared(ESC50).glob("*.wav"))[:4]:
        shutil.copy(source, audio / source.name)
    (audio / "1-bad.wav").write_text("not audio")  # a bad file in one process's share
    one = generate_launched(listening_workdir, audio, tmp_path / "one.jsonl", 1, 4)
    two = generate_launched(listening_workdir, audio, tmp_path / "two.jsonl", 2, 2)
    assert len(one.splitlines()) == 4
    assert two == one
