"""`python -m mats_jax.convert clap --from msclap`: a torch.save'd msclap state dict becomes a
checkpoint folder that loads back exactly; bad input fails with one line naming the key/file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mats_jax.clap.load import load_clap
from mats_jax.clap.model import STATE_KINDS, ClapConfig
from mats_jax.convert.__main__ import main
from mats_jax.convert.clap import expected_shapes, flax_to_msclap, msclap_to_flax
from mats_jax.models.params import flat_params
from mats_jax.runtime.fileio import ModelFileError
from tests.references.msclap import msclap_reference
from tests.references.torch_io import torch_state

# buffers and the unused `head` that the converter skips, as msclap's state dict names them
SKIPPED = ("relative_position_index", "attn_mask", "num_batches_tracked", "htsat.head.")


@pytest.mark.slow
def test_pth_to_checkpoint_to_msclap_round_trip(tmp_path, capsys):
    reference = msclap_reference()
    state = reference.state_dict()
    pth = tmp_path / "CLAP_weights_2023.pth"
    torch.save({"model": state}, pth)
    assert (
        main(["clap", "--from", "msclap", "--source", str(pth), "--out", str(tmp_path / "ckpt")])
        == 0
    )
    assert "wrote mats_jax checkpoint" in capsys.readouterr().out

    model = load_clap(tmp_path / "ckpt")
    back = flax_to_msclap(
        {k: np.asarray(v[...]) for k, v in flat_params(model, STATE_KINDS).items()}
    )
    original = torch_state(reference)
    skipped = {k for k in original if any(s in k for s in SKIPPED)}
    assert set(back) == set(original) - skipped
    assert all(np.array_equal(back[k], original[k]) for k in back)
    # and msclap itself accepts the exported tensors
    missing, unexpected = reference.load_state_dict(
        {k: torch.tensor(v) for k, v in back.items()}, strict=False
    )
    assert not unexpected
    assert set(missing) == {
        k for k in skipped if "num_batches_tracked" not in k
    }  # torch tolerates that one


def small_state() -> dict[str, np.ndarray]:
    """A complete msclap-layout state dict of zeros (no torch model needed)."""
    shapes = expected_shapes(ClapConfig())
    return flax_to_msclap({k: np.zeros(s, np.float32) for k, s in shapes.items()})


def test_missing_key_is_named_by_its_msclap_name():
    tensors = small_state()
    del tensors["audio_encoder.base.htsat.layers.2.blocks.3.attn.qkv.weight"]
    with pytest.raises(
        ModelFileError,
        match=r"missing key 'audio_encoder\.base\.htsat\.layers\.2\.blocks\.3\.attn\.qkv\.weight'",
    ):
        msclap_to_flax(tensors, source="x.pth")


def test_misshapen_tensor_is_named():
    tensors = small_state()
    tensors["caption_encoder.projection.linear1.weight"] = np.zeros((1024, 512), np.float32)
    with pytest.raises(
        ModelFileError, match=r"'caption_encoder\.projection\.linear1\.weight' has shape"
    ):
        msclap_to_flax(tensors, source="x.pth")


def test_known_buffers_are_skipped_and_others_rejected():
    tensors = small_state() | {
        "caption_encoder.base.h.0.attn.bias": np.zeros((1, 1, 1024, 1024), bool),
        "caption_encoder.base.h.0.attn.masked_bias": np.zeros((), np.float32),
        "audio_encoder.base.htsat.layers.0.blocks.1.attn_mask": np.zeros((64, 64, 64), np.float32),
        "audio_encoder.base.htsat.layers.0.blocks.0.attn.relative_position_index": np.zeros(
            (64, 64), np.int64
        ),
        "audio_encoder.base.htsat.bn0.num_batches_tracked": np.zeros((), np.int64),
        "audio_encoder.base.htsat.head.weight": np.zeros((527, 527), np.float32),
        "audio_encoder.base.htsat.head.bias": np.zeros((527,), np.float32),
    }
    assert len(msclap_to_flax(tensors)) == len(expected_shapes(ClapConfig()))
    with pytest.raises(
        ModelFileError, match=r"x\.pth: unexpected key 'audio_encoder\.base\.htsat\.extra\.weight'"
    ):
        msclap_to_flax(
            tensors | {"audio_encoder.base.htsat.extra.weight": np.zeros(3)}, source="x.pth"
        )


@pytest.mark.parametrize(
    "content, message",
    [
        (
            {
                "model": {
                    "caption_encoder.base.wte.weight": torch.zeros(3, 2),
                    "bogus.weight": torch.zeros(1),
                }
            },
            "unexpected key 'bogus.weight'",
        ),
        ({"model": {"logit_scale": torch.zeros(())}}, "missing key '"),
        ({"state_dict": {}}, "no 'model' state dict"),
    ],
)
def test_cli_reports_one_line_errors(tmp_path, capsys, content, message):
    pth = tmp_path / "bad.pth"
    torch.save(content, pth)
    assert (
        main(["clap", "--from", "msclap", "--source", str(pth), "--out", str(tmp_path / "o")]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(pth) in err
    assert not (tmp_path / "o").exists()


def test_cli_reports_unreadable_files(tmp_path, capsys):
    assert (
        main(
            [
                "clap",
                "--from",
                "msclap",
                "--source",
                str(tmp_path / "none.pth"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "none.pth: no such file" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    assert (
        main(
            [
                "clap",
                "--from",
                "msclap",
                "--source",
                str(tmp_path / "junk.pth"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.pth: cannot be read" in err
