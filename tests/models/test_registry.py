"""One registry of model families, spelled as model folders and configs spell them."""

import pytest

from mats_jax.clap.model import CLAP, ClapConfig
from mats_jax.clap.model import FAMILIES as CLAP_FAMILIES
from mats_jax.convert.llm import KEYMAPS
from mats_jax.models import registry
from mats_jax.models.gpt2 import GPT2
from mats_jax.models.llama import Llama
from mats_jax.runtime.fileio import ModelFileError


def test_every_family_is_registered_under_the_name_its_folders_carry():
    assert registry.get("llama").model is Llama and registry.get("gpt2").model is GPT2
    assert CLAP_FAMILIES == ("clap-msclap-2023", "clap-laion")
    for name in CLAP_FAMILIES:
        assert registry.get(name).model is CLAP and registry.get(name).config is ClapConfig
    assert set(KEYMAPS) == {"llama", "gpt2"}  # the converters' key maps use the same names


def test_hf_model_types_map_to_families():
    assert registry.of_hf_config({"model_type": "mistral"}, "x").name == "llama"
    with pytest.raises(
        ModelFileError, match=r"^x: model_type 'bert' is not supported \(gpt2, llama, mistral\)$"
    ):
        registry.of_hf_config({"model_type": "bert"}, "x")


def test_an_unknown_family_is_a_one_line_error():
    with pytest.raises(ModelFileError, match=r"^ckpt: model family 'rwkv' is not one of "):
        registry.get("rwkv", "ckpt")


def test_a_clap_config_written_with_the_earlier_family_spelling_still_reads():
    old = ClapConfig.laion().to_dict() | {"family": "laion"}
    assert ClapConfig.from_dict(old) == ClapConfig.laion()
    assert ClapConfig.from_dict(ClapConfig().to_dict() | {"family": "msclap-2023"}) == ClapConfig()
