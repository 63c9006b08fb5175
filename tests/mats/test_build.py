"""mats.build: the RNG state made without any weight equals build_mats'; a config that declares
its LLM's architecture builds only from a checkpoint of that architecture."""

import jax
import numpy as np
import pytest
from flax import nnx

from mats_jax.config import ConfigError, base
from mats_jax.mats.build import build_mats, check_llm, initial_rngs
from tests.support.models import tiny_llama_folder

VICUNA = dict(
    model_type="llama",
    vocab_size=32001,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
)


def small_config(**llm):
    c = base()
    c.clap.dim = 32
    c.mapper.update(dim=64, prefix_length=4, clip_length=4, num_layers=2, num_heads=8)
    c.llm.update(llm)
    return c


def key_data(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("build") / "llm")


@pytest.fixture
def restores_key_type():
    """build_mats sets the process' default PRNG implementation: leave it as it was."""
    impl = jax.config.jax_default_prng_impl
    yield
    jax.config.update("jax_default_prng_impl", impl)


@pytest.mark.parametrize("prng_impl", ["threefry2x32", "rbg"])
def test_initial_rngs_equal_those_of_the_built_model(llm, prng_impl, restores_key_type):
    config = small_config(checkpoint=str(llm))
    config.train.update(prng_impl=prng_impl, seed=3)
    model, _ = build_mats(config)
    built = dict(nnx.to_flat_state(nnx.state(model, nnx.RngState)))
    made = dict(nnx.to_flat_state(initial_rngs(config)))
    assert built.keys() == made.keys() and len(built) > 0
    for path, variable in built.items():
        assert type(made[path]) is type(variable), path
        assert made[path][...].dtype == variable[...].dtype, path
        np.testing.assert_array_equal(key_data(made[path][...]), key_data(variable[...]))


def test_a_declared_llm_without_its_checkpoint_is_a_one_line_error():
    config = small_config(architecture=VICUNA)
    with pytest.raises(ConfigError) as raised:
        build_mats(config)
    message = str(raised.value)
    assert "\n" not in message and "llm.checkpoint" in message and "not here" in message


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_field(llm):
    # the tiny LLaMA: vocab 49152, hidden 32, 2 layers, 4 heads, 2 key/value heads
    with pytest.raises(ConfigError, match="has vocab_size 49152, but llm.architecture says 32001"):
        check_llm(small_config(checkpoint=str(llm), architecture=VICUNA))
    tiny = dict(
        model_type="llama",
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    with pytest.raises(ConfigError, match="num_key_value_heads 2, but llm.architecture says 4"):
        check_llm(small_config(checkpoint=str(llm), architecture=tiny))  # absent: = heads
    with pytest.raises(ConfigError, match="is a llama LLM, but llm.architecture names a gpt2"):
        check_llm(small_config(checkpoint=str(llm), architecture=dict(model_type="gpt2")))
    same = tiny | {"num_key_value_heads": 2}
    model, _ = build_mats(small_config(checkpoint=str(llm), architecture=same))
    assert model.llm.config.hidden_size == 32
