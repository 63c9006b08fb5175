"""`python -m mats_jax.export` never destroys what is at --out: a workdir (its own included) or a
folder of other files is refused in one line before any work, a previous export is replaced only
with --overwrite. (What the exports hold is tested in tests/training/test_interchange.py.)"""

import pytest
import torch

from mats_jax.export import main
from tests.support.outputs import marker_command, one_line, other_files, snapshot


@pytest.mark.slow
def test_outputs_are_never_destroyed(listening_workdir, tmp_path, capsys):
    workdir_before = snapshot(listening_workdir)

    def export(format, out, *extra):
        args = ["--workdir", str(listening_workdir), "--format", format, "--out", str(out)]
        return main([*args, *extra]), capsys.readouterr().err

    def export_overwriting(format, out):
        return export(format, out, "--overwrite")

    for target in (listening_workdir, other_files(tmp_path / "others")):
        before = snapshot(target)
        code, err = export_overwriting("hf-peft", target)
        assert code == 1 and one_line(err) == (
            f"error: {target} exists and is not a previous `export --format hf-peft` output; "
            "choose another --out"
        )
        code, err = export_overwriting("mats-torch", target)
        assert code == 1
        assert one_line(err) == f"error: {target} exists and is not a file; choose another --out"
        assert snapshot(target) == before

    adapter = tmp_path / "adapter"
    assert export("hf-peft", adapter)[0] == 0
    assert marker_command(adapter) == "export --format hf-peft"
    (adapter / "stale.txt").write_text("from the first export")
    before = snapshot(adapter)
    code, err = export("hf-peft", adapter)
    assert code == 1 and one_line(err) == (
        f"error: {adapter} is a previous `export --format hf-peft` output; "
        "pass --overwrite to replace it"
    )
    assert snapshot(adapter) == before
    assert export_overwriting("hf-peft", adapter)[0] == 0
    assert not (adapter / "stale.txt").exists() and (adapter / "adapter_config.json").is_file()

    pth = tmp_path / "mats.pth"
    pth.write_bytes(b"an earlier file")
    code, err = export("mats-torch", pth)
    assert code == 1 and one_line(err) == f"error: {pth} exists; pass --overwrite to replace it"
    assert pth.read_bytes() == b"an earlier file"
    assert export_overwriting("mats-torch", pth)[0] == 0
    assert any(k.startswith("audio_mapper.") for k in torch.load(pth, weights_only=True)["model"])

    assert snapshot(listening_workdir) == workdir_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "mats.pth", "others"]
