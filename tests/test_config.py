"""The one config schema: checks name the bad key, config.json is versioned and migrated."""

import json

import jax
import pytest

from mats_jax.config import (
    CONFIG_VERSION,
    ConfigError,
    base,
    check_layout,
    check_paths,
    check_values,
    mats_config,
    read_json,
    write_json,
)
from mats_jax.runtime.sharding import make_mesh


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.checkpoint_every", 0),
        ("train.steps", -5),
        ("train.batch_size", 0),
        ("train.log_every", 0),
        ("eval.batch_size", 0),
        ("santa.clusters", 0),
        ("train.profile_steps", -1),
    ],
)
def test_check_values_names_the_key_and_value(key, value):
    config = base()
    section, field = key.split(".")
    config[section][field] = value
    with pytest.raises(ConfigError, match=rf"^{key} must be an integer >= \d+, got {value!r}$"):
        check_values(config)


def test_check_values_refuses_a_mixture_without_weight():
    config = base()
    config.data.sources = {"audiocaps": 0.0}
    with pytest.raises(ConfigError, match="data.sources .* has no positive weight"):
        check_values(config)


def test_check_layout_needs_batches_that_split_over_the_data_axes():
    config = base()
    config.train.update(batch_size=6, grad_accum=4)
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    with pytest.raises(
        ConfigError, match="train.batch_size 6 is not divisible by train.grad_accum 4"
    ):
        check_layout(config, mesh)
    config.train.update(batch_size=8, grad_accum=4)
    check_layout(config, mesh)


def test_check_paths_names_a_missing_path(tmp_path):
    config = base()
    config.data.corpus = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=f"^data.corpus: {tmp_path / 'nowhere'} does not exist$"):
        check_paths(config)
    check_paths(config, ("llm.checkpoint",))  # only what is asked for


def test_mats_config_feeds_clap_dim_to_the_mapper():
    config = base()
    config.clap.dim = 512
    config.mapper.dim = 256
    view = mats_config(config)
    assert (view.mapper.clap_dim, view.mapper.dim, view.lora.targets) == (
        512,
        256,
        ("q_proj", "v_proj"),
    )


def test_config_json_round_trip_carries_the_version(tmp_path):
    config = base()
    config.train.lr = 1e-4
    config.data.sources = {"clotho": 2.0}
    write_json(config, tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["config_version"] == CONFIG_VERSION
    again = read_json(tmp_path / "config.json")
    assert again.to_dict() == json.loads(config.to_json_best_effort())


def test_a_config_json_written_before_the_version_is_migrated(tmp_path):
    """Version 1 had no `config_version`, no `llm.architecture` and no packing; its own values
    are kept and the user's source mixture is not merged with the default one."""
    old = json.loads(base().to_json_best_effort())
    del old["llm"]["architecture"], old["data"]["packed_length"], old["data"]["max_per_row"]
    old["data"]["sources"] = {"clotho": 1.0}
    old["train"]["steps"] = 7
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = read_json(tmp_path / "config.json")
    assert config.llm.architecture.to_dict() == {} and config.train.steps == 7
    assert config.data.sources.to_dict() == {"clotho": 1.0}
    # runs from before packing trained one example per row: they read back unpacked
    assert (config.data.packed_length, config.data.max_per_row) == (0, base().data.max_per_row)


def test_a_version_2_config_json_reads_back_unpacked(tmp_path):
    old = json.loads(base().to_json_best_effort())
    del old["data"]["packed_length"], old["data"]["max_per_row"]
    (tmp_path / "config.json").write_text(json.dumps({"config_version": 2, **old}))
    assert read_json(tmp_path / "config.json").data.packed_length == 0


def test_a_newer_config_json_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config_version": CONFIG_VERSION + 1}))
    with pytest.raises(ConfigError, match="newer than this mats_jax .* upgrade mats_jax"):
        read_json(tmp_path / "config.json")
