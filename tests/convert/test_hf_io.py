"""HF folder IO, checked against what torch, safetensors and transformers read from the files."""

import json

import ml_dtypes
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

from mats_jax.convert.hf_io import read_hf_folder, write_hf_folder
from mats_jax.runtime.fileio import MARKER, ModelFileError, OutputExistsError


def _bits(a) -> np.ndarray:
    """Raw bytes of a numpy array or torch tensor, for bit-exact comparisons."""
    if isinstance(a, torch.Tensor):
        a = a.view(torch.int16) if a.dtype == torch.bfloat16 else a
        a = a.contiguous().numpy()
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


@pytest.fixture
def tensors(rng) -> dict[str, np.ndarray]:
    return {
        "embed.weight": rng.standard_normal((7, 5)).astype(ml_dtypes.bfloat16),
        "layer.0.weight": rng.standard_normal((5, 5)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(5).astype(np.float16),
        "position_ids": np.arange(9, dtype=np.int64)[None],
        "scale": np.array(0.5, np.float32),
    }


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _torch_tensor(a: np.ndarray) -> torch.Tensor:
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def _check_torch_equal(ours: dict[str, np.ndarray], reference: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == reference.keys()
    for name, a in ours.items():
        assert tuple(a.shape) == tuple(reference[name].shape), name
        assert str(reference[name].dtype).removeprefix("torch.") == a.dtype.name, name
        np.testing.assert_array_equal(_bits(a), _bits(reference[name]), err_msg=name)


def test_single_file_is_what_safetensors_reads(tmp_path, tensors):
    write_hf_folder(tmp_path / "m", {"model_type": "x"}, tensors)

    assert _listing(tmp_path / "m") == [MARKER, "config.json", "model.safetensors"]
    reference = safetensors.torch.load_file(tmp_path / "m" / "model.safetensors")
    _check_torch_equal(tensors, reference)
    config, ours = read_hf_folder(tmp_path / "m", dtype=None)
    assert config == {"model_type": "x"}
    _check_torch_equal(ours, reference)


def test_sharded_files_and_index_are_what_safetensors_reads(tmp_path, tensors):
    write_hf_folder(tmp_path / "m", {}, tensors, max_shard_bytes=64)

    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (tmp_path / "m" / "model.safetensors").exists()
    reference = {}
    for shard in shards:
        loaded = safetensors.torch.load_file(tmp_path / "m" / shard)
        assert all(index["weight_map"][name] == shard for name in loaded)
        reference.update(loaded)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())
    _check_torch_equal(tensors, reference)
    _check_torch_equal(read_hf_folder(tmp_path / "m", dtype=None)[1], reference)


def test_default_dtype_casts_floats_to_float32_like_torch(tmp_path, tensors):
    write_hf_folder(tmp_path / "m", {}, tensors)

    _, ours = read_hf_folder(tmp_path / "m")
    for name, t in safetensors.torch.load_file(tmp_path / "m" / "model.safetensors").items():
        expected = t.float() if t.is_floating_point() else t
        _check_torch_equal({name: ours[name]}, {name: expected})


def test_transformers_loads_what_we_write_and_we_read_what_it_saves(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model.save_pretrained(tmp_path / "hf", max_shard_size="4KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    hf_config, ours = read_hf_folder(tmp_path / "hf", dtype=None)
    assert hf_config["hidden_size"] == 16
    _check_torch_equal(ours, state)

    write_hf_folder(tmp_path / "ours", hf_config, ours, max_shard_bytes=4000)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "ours", dtype=torch.bfloat16
    )
    _check_torch_equal(ours, reloaded.state_dict())


def test_pytorch_bin_single_and_sharded(tmp_path, tensors):
    state = {name: _torch_tensor(a) for name, a in tensors.items()}
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "config.json").write_text("{}")
    torch.save(state, tmp_path / "single" / "pytorch_model.bin")
    _check_torch_equal(read_hf_folder(tmp_path / "single", dtype=None)[1], state)

    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "config.json").write_text("{}")
    names = list(state)
    weight_map = {}
    for i, part in enumerate((names[:2], names[2:])):
        file = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({n: state[n] for n in part}, tmp_path / "sharded" / file)
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (tmp_path / "sharded" / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    _, ours = read_hf_folder(tmp_path / "sharded")
    as_float = {n: t.float() if t.is_floating_point() else t for n, t in state.items()}
    _check_torch_equal(ours, as_float)


def test_overwrite_replaces_folder_and_failure_keeps_old_one(tmp_path, tensors):
    write_hf_folder(tmp_path / "m", {"v": 1}, tensors, max_shard_bytes=64)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        write_hf_folder(tmp_path / "m", {"v": 2}, {"x": np.zeros(2, np.float32)})
    assert read_hf_folder(tmp_path / "m")[0] == {"v": 1}
    write_hf_folder(tmp_path / "m", {"v": 2}, {"x": np.zeros(2, np.float32)}, overwrite=True)
    assert _listing(tmp_path / "m") == [MARKER, "config.json", "model.safetensors"]

    with pytest.raises(ModelFileError, match="complex64"):
        write_hf_folder(tmp_path / "m", {"v": 3}, {"x": np.zeros(2, np.complex64)}, overwrite=True)
    assert read_hf_folder(tmp_path / "m")[0] == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


def test_missing_folder_config_or_weights(tmp_path):
    with pytest.raises(ModelFileError, match="no such model folder"):
        read_hf_folder(tmp_path / "absent")
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelFileError, match="config.json"):
        read_hf_folder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelFileError, match="no weights"):
        read_hf_folder(tmp_path / "m")
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors"}}
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match="model-00001-of-00002.safetensors"):
        read_hf_folder(tmp_path / "m")


def test_corrupt_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="config.json"):
        read_hf_folder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"this is not safetensors")
    with pytest.raises(ModelFileError, match="model.safetensors"):
        read_hf_folder(tmp_path / "m")
