"""`python -m mats_jax.convert clap --from hf`: a transformers `ClapModel` folder (LAION-CLAP)
becomes a checkpoint folder that loads back exactly and embeds like the source; bad folders fail
with one line naming the key."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mats_jax.clap.load import load_clap
from mats_jax.clap.model import STATE_KINDS, ClapConfig, embed_audio_features_fn, embed_text_fn
from mats_jax.convert.__main__ import main
from mats_jax.convert.clap import expected_shapes, flax_to_hf, hf_keymap, hf_to_flax
from mats_jax.convert.hf_io import write_hf_folder
from mats_jax.convert.keymap import Concat, KeyMap, transpose
from mats_jax.models.params import flat_params
from mats_jax.runtime.fileio import ModelFileError
from tests.references.laion import fused_reference, our_model
from tests.references.torch_io import torch_state
from tests.support.clap_inputs import caption_ids, clips
from tests.support.outputs import fake_workdir, marker_command, one_line, other_files, snapshot

# buffers the converter skips, as transformers' state dict names them
SKIPPED = ("position_ids", "token_type_ids", "relative_position_index", "num_batches_tracked")

# a small ClapModel config (2 text layers, 2 Swin stages): folders of zeros in milliseconds
TINY_HF = dict(
    text_config=dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    ),
    audio_config=dict(
        depths=[1, 1],
        num_attention_heads=[2, 4],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        enable_fusion=True,
    ),
    projection_dim=16,
)


def params_of(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v[...]) for k, v in flat_params(model, STATE_KINDS).items()}


@pytest.mark.slow
def test_clap_model_folder_to_checkpoint_and_back(tmp_path, capsys):
    reference = fused_reference()
    reference.save_pretrained(tmp_path / "hf")
    assert (
        main(
            [
                "clap",
                "--from",
                "hf",
                "--source",
                str(tmp_path / "hf"),
                "--out",
                str(tmp_path / "ckpt"),
            ]
        )
        == 0
    )
    assert "wrote mats_jax checkpoint" in capsys.readouterr().out

    model, direct = load_clap(tmp_path / "ckpt"), our_model(True)
    assert model.config == direct.config == ClapConfig.laion(fusion=True)
    loaded, expected = params_of(model), params_of(direct)
    assert loaded.keys() == expected.keys()
    assert all(np.array_equal(loaded[k], expected[k]) for k in expected)

    # the same embeddings as the model converted in memory (checked against ClapModel elsewhere)
    ids, mask = caption_ids()
    features = ClapConfig.laion(fusion=True).feature_extractor(list(clips()), 11)
    text = lambda m: np.asarray(embed_text_fn(m)(jnp.asarray(ids), jnp.asarray(mask)))
    audio = lambda m: np.asarray(
        embed_audio_features_fn(m)(jnp.asarray(features.features), jnp.asarray(features.is_longer))[
            0
        ]
    )
    np.testing.assert_array_equal(text(model), text(direct))
    np.testing.assert_array_equal(audio(model), audio(direct))

    # export gives transformers' tensors back bit for bit, and ClapModel accepts them
    back = flax_to_hf(loaded)
    original = torch_state(reference)
    skipped = {k for k in original if any(s in k for s in SKIPPED)}
    assert set(back) == set(original) - skipped
    assert all(np.array_equal(back[k], original[k]) for k in back)
    missing, unexpected = reference.load_state_dict(
        {k: torch.tensor(v) for k, v in back.items()}, strict=False
    )
    assert not unexpected and set(missing) == skipped - {
        k for k in skipped if "num_batches_tracked" in k
    }


def tiny_folder(path, extra=None, drop=()):
    """A tiny fused ClapModel folder of zeros (+ the buffers transformers saves, + `extra`)."""
    hf = transformers.ClapConfig(**TINY_HF).to_dict()
    config = ClapConfig.from_hf(hf)
    tensors = flax_to_hf({k: np.zeros(s, np.float32) for k, s in expected_shapes(config).items()})
    tensors |= {
        "text_model.embeddings.position_ids": np.arange(40)[None],
        "text_model.embeddings.token_type_ids": np.zeros((1, 40), np.int64),
        (
            "audio_model.audio_encoder.layers.1.blocks.0.attention.self.relative_position_index"
        ): np.zeros((64, 64), np.int64),
        "audio_model.audio_encoder.batch_norm.num_batches_tracked": np.zeros((), np.int64),
        (
            "audio_model.audio_encoder.patch_embed.fusion_model.global_att.5.num_batches_tracked"
        ): np.zeros((), np.int64),
    }
    tensors |= extra or {}
    for key in drop:
        del tensors[key]
    write_hf_folder(path, hf, tensors)
    return config


def test_tiny_folder_converts_and_loads(tmp_path):
    config = tiny_folder(tmp_path / "hf")
    assert (
        config.audio.fusion and config.text.num_hidden_layers == 2 and config.projection_dim == 16
    )
    assert (
        main(
            [
                "clap",
                "--from",
                "hf",
                "--source",
                str(tmp_path / "hf"),
                "--out",
                str(tmp_path / "ckpt"),
            ]
        )
        == 0
    )
    model = load_clap(tmp_path / "ckpt")
    assert model.config == config
    assert set(params_of(model)) == set(expected_shapes(config))


@pytest.mark.parametrize(
    "extra, drop, message",
    [
        (
            {"audio_model.audio_encoder.head.weight": np.zeros((3, 3), np.float32)},
            (),
            "unexpected key 'audio_model.audio_encoder.head.weight'",
        ),
        (
            {},
            ("audio_model.audio_encoder.layers.0.blocks.0.attention.self.key.weight",),
            "missing key 'audio_model.audio_encoder.layers.0.blocks.0.attention.self.key.weight'",
        ),
        ({}, ("text_projection.linear2.bias",), "missing key 'text_projection.linear2.bias'"),
        (
            {
                "text_model.encoder.layer.0.attention.self.query.weight": np.zeros(
                    (32, 16), np.float32
                )
            },
            (),
            "'text_model.encoder.layer.0.attention.self.query.weight' has shape",
        ),
    ],
)
def test_cli_names_bad_keys_in_one_line(tmp_path, capsys, extra, drop, message):
    tiny_folder(tmp_path / "hf", extra, drop)
    assert (
        main(
            ["clap", "--from", "hf", "--source", str(tmp_path / "hf"), "--out", str(tmp_path / "o")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(tmp_path / "hf") in err
    assert not (tmp_path / "o").exists()


def test_cli_rejects_other_models(tmp_path, capsys):
    write_hf_folder(
        tmp_path / "gpt2", {"model_type": "gpt2"}, {"wte.weight": np.zeros((2, 2), np.float32)}
    )
    assert (
        main(
            [
                "clap",
                "--from",
                "hf",
                "--source",
                str(tmp_path / "gpt2"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model_type is 'gpt2', not 'clap'" in err
    assert (
        main(
            [
                "clap",
                "--from",
                "hf",
                "--source",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "no such model folder" in capsys.readouterr().err


def test_concat_rule_fuses_and_splits_exactly(rng):
    keymap = KeyMap(
        (
            Concat(
                ("l.*.q.weight", "l.*.k.weight", "l.*.v.weight"),
                "l.*.qkv.kernel",
                transform=transpose,
            ),
        )
    )
    torch_side = {f"l.3.{n}.weight": rng.standard_normal((4, 5)).astype(np.float32) for n in "qkv"}
    ours = keymap.to_flax(torch_side, "x")
    np.testing.assert_array_equal(
        ours["l.3.qkv.kernel"], np.concatenate([torch_side[f"l.3.{n}.weight"] for n in "qkv"]).T
    )
    back = keymap.to_torch(ours)
    assert back.keys() == torch_side.keys() and all(
        np.array_equal(back[k], torch_side[k]) for k in back
    )
    with pytest.raises(ModelFileError, match=r"x: missing key 'l\.3\.k\.weight'"):
        keymap.to_flax({k: v for k, v in torch_side.items() if ".k." not in k}, "x")


def test_hf_keymap_names_every_parameter_both_ways():
    """Every parameter of both LAION variants has a transformers name, and the names round-trip
    (small configs; the full-size names are checked against ClapModel in the slow test)."""
    for fusion in (False, True):
        hf = transformers.ClapConfig(
            **TINY_HF | {"audio_config": TINY_HF["audio_config"] | {"enable_fusion": fusion}}
        )
        config = ClapConfig.from_hf(hf.to_dict())
        zeros = {k: np.zeros(s, np.float32) for k, s in expected_shapes(config).items()}
        exported = flax_to_hf(zeros)
        # weight and bias of 2 text layers and 2 Swin blocks
        assert sum(".attention.self.query." in k for k in exported) == 2 * (2 + 2)
        assert any("fusion_model" in k for k in exported) == fusion
        assert set(hf_to_flax(exported, config)) == set(zeros)
    assert any(r.torch == "logit_scale_a" for r in hf_keymap().rules if not isinstance(r, Concat))


def test_outputs_are_never_destroyed(tmp_path, capsys):
    tiny_folder(tmp_path / "hf")

    def convert(out, *extra):
        args = ["clap", "--from", "hf", "--source", str(tmp_path / "hf"), "--out", str(out)]
        return main([*args, *extra]), capsys.readouterr().err

    for target in (fake_workdir(tmp_path / "workdir"), other_files(tmp_path / "others")):
        before = snapshot(target)
        code, err = convert(target, "--overwrite")
        assert code == 1 and one_line(err) == (
            f"error: {target} exists and is not a previous `convert clap` output; "
            "choose another --out"
        )
        assert snapshot(target) == before

    out = tmp_path / "ckpt"
    assert convert(out)[0] == 0
    assert marker_command(out) == "convert clap"
    (out / "stale.txt").write_text("from the last conversion")
    before = snapshot(out)
    code, err = convert(out)
    assert code == 1 and one_line(err) == (
        f"error: {out} is a previous `convert clap` output; pass --overwrite to replace it"
    )
    assert snapshot(out) == before
    assert convert(out, "--overwrite")[0] == 0
    assert not (out / "stale.txt").exists()
    assert load_clap(out).config.projection_dim == 16
