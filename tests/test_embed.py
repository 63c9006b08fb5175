"""`python -m mats_jax.embed`: one row per readable file in order, bad files reported and skipped,
outputs written whole; no --clap means a loud random-weights warning."""

import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from mats_jax.clap.audio import load_clip
from mats_jax.clap.load import load_clap
from mats_jax.clap.model import CLAP, MSCLAP_2023, STATE_KINDS, ClapConfig, embed_audio_fn
from mats_jax.embed import main
from mats_jax.models import store
from mats_jax.models.params import create_jitted, param_arrays
from tests.support.outputs import fake_workdir, one_line, other_files, snapshot
from tests.support.paths import ESC50, shared


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clap") / "clap"
    model = create_jitted(lambda: CLAP(ClapConfig(), rngs=nnx.Rngs(0)))
    store.save_model(folder, MSCLAP_2023, ClapConfig().to_dict(), param_arrays(model, STATE_KINDS))
    return folder


@pytest.mark.slow
def test_folder_with_a_bad_file(clap_dir, tmp_path, capsys):
    clips = sorted(shared(ESC50).glob("*.wav"))[:2]
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in clips:
        (folder / clip.name).write_bytes(clip.read_bytes())
    (folder / "broken.wav").write_text("not audio")
    assert (
        main(["--clap", str(clap_dir), "--audio", str(folder), "--out", str(tmp_path / "e.npy")])
        == 0
    )
    table = np.load(tmp_path / "e.npy")
    sidecar = json.loads((tmp_path / "e.json").read_text())
    assert [Path(p).name for p in sidecar["rows"]] == [c.name for c in clips]
    assert list(map(lambda p: Path(p).name, sidecar["errors"])) == ["broken.wav"]
    assert "broken.wav" in capsys.readouterr().err
    expected, _ = embed_audio_fn(load_clap(clap_dir))(
        np.stack([load_clip(c, crop="center") for c in clips])
    )
    np.testing.assert_allclose(table, np.asarray(expected), atol=1e-5)


def test_text_file_and_missing_input(clap_dir, tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("A dog barks.\n\nRain falls on a tin roof!\n")
    assert (
        main(["--clap", str(clap_dir), "--text", str(captions), "--out", str(tmp_path / "t.npy")])
        == 0
    )
    assert np.load(tmp_path / "t.npy").shape == (2, 1024)
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == [
        "A dog barks.",
        "Rain falls on a tin roof!",
    ]
    assert (
        main(
            [
                "--clap",
                str(clap_dir),
                "--audio",
                str(tmp_path / "missing.wav"),
                "--out",
                str(tmp_path / "m.npy"),
            ]
        )
        == 1
    )
    assert "missing.wav" in capsys.readouterr().err and not (tmp_path / "m.npy").exists()


@pytest.mark.slow
def test_without_clap_weights_it_warns_loudly(tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("A dog barks.\n")
    assert main(["--text", str(captions), "--out", str(tmp_path / "t.npy")]) == 0
    assert "CLAP weights are RANDOM" in capsys.readouterr().err


def test_outputs_are_never_destroyed(clap_dir, tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("A dog barks.\n")

    def embed(out, *extra, what=("--text", str(captions))):
        code = main(["--clap", str(clap_dir), *what, "--out", str(out), *extra])
        return code, capsys.readouterr()

    for name, make in (("workdir", fake_workdir), ("others", other_files)):
        target, sidecar = make(tmp_path / name), make(tmp_path / f"{name}-table.json")
        before = (snapshot(target), snapshot(sidecar))
        code, io = embed(target, "--overwrite")
        assert code == 1
        assert one_line(io.err) == f"error: {target} exists and is not a file; choose another --out"
        # the sidecar's name is taken by a folder: refused as well, before any work
        code, io = embed(tmp_path / f"{name}-table.npy", "--overwrite")
        assert code == 1
        refused = f"error: {sidecar} exists and is not a file; choose another --out"
        assert one_line(io.err) == refused
        assert (snapshot(target), snapshot(sidecar)) == before
        assert not (tmp_path / f"{name}-table.npy").exists()

    out = tmp_path / "e.npy"
    assert embed(out)[0] == 0
    before = (snapshot(out), snapshot(tmp_path / "e.json"))
    code, io = embed(out)
    assert code == 1 and one_line(io.err) == f"error: {out} exists; pass --overwrite to replace it"
    assert (snapshot(out), snapshot(tmp_path / "e.json")) == before

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken.wav").write_text("not audio")
    cases = ((empty, "no audio files", ()), (broken, "none of the 1 audio files", ("--overwrite",)))
    for folder, says, extra in cases:
        code, io = embed(out, *extra, what=("--audio", str(folder)))
        assert code == 1 and says in one_line(io.err) and f"nothing written to {out}" in io.err
        assert (snapshot(out), snapshot(tmp_path / "e.json")) == before

    captions.write_text("Rain falls.\nA bell rings.\n")
    assert embed(out, "--overwrite")[0] == 0
    assert np.load(out).shape == (2, 1024)
    assert json.loads((tmp_path / "e.json").read_text())["rows"] == ["Rain falls.", "A bell rings."]
