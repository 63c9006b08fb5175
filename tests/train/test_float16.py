"""`llm.dtype=float16`, as the original runs the frozen LLM on GPUs: the config check takes it
(and names a dtype it does not take), the LLM computes in float16 within float16's rounding of
PyTorch's float16 forward of the same weights, and a short packed training run in float16 stays
finite and follows float32's loss curve, its trained parameters float32."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mats_jax import train as trainer
from mats_jax.config import ConfigError, base, check_values
from mats_jax.convert.__main__ import load_config_file
from mats_jax.convert.llm import load_llm
from mats_jax.inference.listener import Listener
from tests.support.models import tiny_llama_folder
from tests.support.paths import ROOT

FLOAT16_EPS = 2.0**-10  # float16's machine epsilon: 10 fraction bits


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_the_config_check_takes_the_llm_dtypes(dtype):
    config = base()
    config.llm.update(dtype=dtype, param_dtype=dtype)
    check_values(config)


def test_the_config_check_names_another_llm_dtype():
    config = base()
    config.llm.dtype = "float8"
    with pytest.raises(ConfigError) as raised:
        check_values(config)
    assert str(raised.value) == (
        "llm.dtype must be one of float32, bfloat16, float16, got 'float8'"
    )


def test_a_float16_forward_is_pytorchs_float16_forward(tmp_path):
    folder = tiny_llama_folder(tmp_path / "llm")
    ids = np.random.default_rng(0).integers(0, 49152, (2, 16))
    with torch.no_grad():
        theirs = {
            dtype: transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=dtype)
            .eval()(torch.from_numpy(ids))
            .logits.float()
            .numpy()
            for dtype in (torch.float16, torch.float32)
        }
    ours16 = load_llm(folder, dtype=jnp.float16, param_dtype=jnp.float16)
    hidden, _ = ours16.hidden_states(jnp.asarray(ids))
    assert hidden.dtype == jnp.float16
    ours = np.asarray(ours16(jnp.asarray(ids))[0], np.float32)
    # two float16 computations round at different places: each is a few float16 epsilons (at
    # the logits' scale, at least 1) from the exact result, and so from each other
    scale = max(1.0, float(np.abs(theirs[torch.float32]).max()))
    np.testing.assert_allclose(ours, theirs[torch.float16], atol=4 * FLOAT16_EPS * scale, rtol=0)
    ours32 = np.asarray(load_llm(folder)(jnp.asarray(ids))[0])
    np.testing.assert_allclose(ours32, theirs[torch.float32], atol=1e-5, rtol=0)
    assert np.abs(ours - ours32).max() > 1e-5  # it really ran in float16


def test_a_short_packed_float16_run_trains_like_float32(tiny_run, tmp_path):
    _, llm, corpus = tiny_run

    def losses(dtype: str) -> list[float]:
        config = load_config_file(ROOT / "configs" / "default.py")
        config.llm.update(checkpoint=str(llm), dtype=dtype, param_dtype=dtype)
        config.data.corpus = str(corpus)
        config.mapper.update(dim=32, num_layers=1)
        config.train.update(steps=40, batch_size=4, log_every=1, checkpoint_every=1000)
        config.eval.update(every=1000, batches=1, batch_size=4, samples=0)
        assert config.data.packed_length > 0
        trainer.train(config, tmp_path / dtype)
        rows = (tmp_path / dtype / "metrics.jsonl").read_text().splitlines()
        return [r["train/loss"] for r in map(json.loads, rows) if "train/loss" in r]

    half, full = np.array(losses("float16")), np.array(losses("float32"))
    assert len(half) == 40 and np.isfinite(half).all()
    # the same examples, steps and initialisation: float16 follows float32's curve within its
    # rounding, and the curve goes down (a random tiny LLaMA starts near ln(vocab))
    np.testing.assert_allclose(half, full, atol=0.05, rtol=0)
    assert half[-5:].mean() < half[:5].mean() - 0.05, (half[:5], half[-5:])
    listener = Listener.from_workdir(tmp_path / "float16", load_clap=False)
    assert listener.model.projector.kernel[...].dtype == jnp.float32  # trained: float32
    assert listener.model.llm.lm_head.kernel[...].dtype == jnp.float16  # frozen: float16
