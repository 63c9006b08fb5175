"""Model folders: exact round trips of test-made params, atomic replacement, clear errors."""

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from mats_jax.models.store import load_model, save_model
from mats_jax.runtime.fileio import ModelFileError

CONFIG = {"hidden_size": 8, "num_hidden_layers": 1, "rope_theta": 10000.0}


@pytest.fixture
def params(rng) -> dict:
    return {
        "embed.embedding": rng.standard_normal((5, 8)).astype(ml_dtypes.bfloat16),
        "layers.0.attn.q.kernel": rng.standard_normal((8, 8)).astype(np.float32),
        "layers.0.attn.q.lora_a": jnp.asarray(rng.standard_normal((8, 2)), jnp.bfloat16),
        "layers.0.norm.scale": rng.standard_normal(8).astype(np.float16),
        "step": np.array(7, np.int32),
    }


def _assert_bit_identical(loaded: dict, expected: dict) -> None:
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        value = np.asarray(value)
        assert isinstance(loaded[name], np.ndarray), name
        assert (loaded[name].dtype, loaded[name].shape) == (value.dtype, value.shape), name
        np.testing.assert_array_equal(loaded[name].tobytes(), value.tobytes(), name)


def test_round_trip_keeps_dtypes_bits_and_tokenizer(tmp_path, params):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text('{"model": {}}')

    save_model(tmp_path / "model", "llama", CONFIG, params, tokenizer_dir=tmp_path / "tok")

    family, config, loaded = load_model(tmp_path / "model")
    assert (family, config) == ("llama", CONFIG)
    _assert_bit_identical(loaded, params)
    assert (tmp_path / "model" / "tokenizer" / "tokenizer.json").read_text() == '{"model": {}}'


def test_dtype_casts_floating_params_only(tmp_path, params):
    save_model(tmp_path / "model", "llama", CONFIG, params)
    _, _, loaded = load_model(tmp_path / "model", dtype=np.float32)
    for name, value in params.items():
        value = np.asarray(value)
        expected = value if value.dtype == np.int32 else value.astype(np.float32)
        _assert_bit_identical({name: loaded[name]}, {name: expected})


def test_overwrite_is_atomic(tmp_path, params):
    save_model(tmp_path / "model", "llama", CONFIG, params)
    gpt2 = {"wte": np.ones((2, 4), np.float32)}
    save_model(tmp_path / "model", "gpt2", {"n_embd": 4}, gpt2, overwrite=True)
    family, config, loaded = load_model(tmp_path / "model")
    assert (family, config, list(loaded)) == ("gpt2", {"n_embd": 4}, ["wte"])

    with pytest.raises(ValueError, match="lies under another parameter"):
        save_model(
            tmp_path / "model",
            "llama",
            CONFIG,
            {"a": np.ones(1), "a.b": np.ones(1)},
            overwrite=True,
        )
    assert load_model(tmp_path / "model")[0] == "gpt2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left behind


def test_missing_or_corrupt_folder(tmp_path, params):
    with pytest.raises(ModelFileError, match="not a mats_jax model folder"):
        load_model(tmp_path / "absent")
    save_model(tmp_path / "model", "llama", CONFIG, params)
    metadata = tmp_path / "model" / "mats_jax.json"
    metadata.write_text("{broken")
    with pytest.raises(ModelFileError, match="mats_jax.json: corrupt"):
        load_model(tmp_path / "model")
    metadata.write_text(json.dumps({"config": CONFIG}))
    with pytest.raises(ModelFileError, match="mats_jax.json: corrupt"):
        load_model(tmp_path / "model")
    metadata.write_text(json.dumps({"family": "llama", "config": CONFIG}))
    (tmp_path / "model" / "params" / "_METADATA").write_text("garbage")
    with pytest.raises(ModelFileError, match="params: cannot restore"):
        load_model(tmp_path / "model")
