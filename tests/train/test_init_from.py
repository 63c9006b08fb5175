"""`train.init_from`: a new run starts from an imported original MATS checkpoint, or from a step
of another run, with those trainable weights, a fresh optimiser and step 1 as its first step;
it says so (stderr, run_start.json, config.json). A source of another model is a one-line error
before any work, and an import is never trained in place."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mats_jax import train as trainer
from mats_jax.config import ConfigError
from mats_jax.convert.__main__ import load_config_file
from mats_jax.convert.__main__ import main as convert
from mats_jax.inference.listener import Listener
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path
from tests.references import mats_original
from tests.support.outputs import snapshot
from tests.support.paths import ROOT

DEFAULT = ROOT / "configs" / "default.py"
MAPPER = dict(dim=32, num_layers=1)  # configs/default.py's mapper, smaller

CONVERT_CONFIG = """
import importlib.util

def get_config():
    spec = importlib.util.spec_from_file_location("default", {default!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.mapper.update({mapper!r})
    return c
"""


def run_config(llm, corpus, **train):
    config = load_config_file(DEFAULT)
    config.llm.checkpoint, config.data.corpus = str(llm), str(corpus)
    config.mapper.update(MAPPER)
    config.train.update(batch_size=4, log_every=1, checkpoint_every=1, **train)
    config.eval.update(every=1000, batches=1, batch_size=4, samples=0)
    return config


def mapper_output(workdir, step=None) -> np.ndarray:
    listener = Listener.from_workdir(workdir, step=step, load_clap=False)
    clap = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)
    clap /= np.linalg.norm(clap, axis=-1, keepdims=True)
    return np.asarray(listener.model.mapper(jnp.asarray(clap)))


def logged_steps(workdir) -> list[int]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "train/loss" in r]


@pytest.fixture(scope="module")
def imported(tiny_run, tmp_path_factory):
    """(import workdir, original .pth, LLM folder, corpus): an original-layout checkpoint at the
    trainer tests' sizes, imported with `python -m mats_jax.convert mats`."""
    _, _, corpus = tiny_run
    tmp = tmp_path_factory.mktemp("init_from")
    torch.manual_seed(0)
    llm_config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,  # the original's LoRA shapes: v_proj as wide as q_proj
    )
    transformers.LlamaForCausalLM(llm_config).save_pretrained(tmp / "llm")
    load_tokenizer(smollm2_gguf_path()).save_pretrained(tmp / "llm")
    base = load_config_file(DEFAULT)
    shapes = mats_original.trained_shapes(
        clap_dim=base.clap.dim,
        dim=MAPPER["dim"],
        prefix_length=base.mapper.prefix_length,
        clip_length=base.mapper.clip_length,
        num_layers=MAPPER["num_layers"],
        mlp_ratio=base.mapper.mlp_ratio,
        hidden_size=32,
        llm_layers=2,
        lora_rank=base.lora.rank,
    )
    original = tmp / "checkpoint_best.pth"
    mats_original.write_original_checkpoint(original, shapes, mats_original.rotary_buffers(2, 8))
    (tmp / "config.py").write_text(CONVERT_CONFIG.format(default=str(DEFAULT), mapper=MAPPER))
    argv = ["mats", "--source", str(original), "--out", str(tmp / "import")]
    assert convert([*argv, "--config", str(tmp / "config.py"), "--llm", str(tmp / "llm")]) == 0
    return tmp / "import", original, tmp / "llm", corpus


def test_a_new_run_starts_from_an_import_then_from_a_step_of_that_run(imported, tmp_path, capsys):
    work, original, llm, corpus = imported
    capsys.readouterr()

    # stage 1 -> a run: from the import's weights; warmup starts at a learning rate of 0, so
    # step 1 changes nothing and checkpoint 1 holds the weights step 1 ran with
    first = tmp_path / "first"
    trainer.train(run_config(llm, corpus, steps=2, init_from=str(work)), first)
    err = capsys.readouterr().err
    assert (
        f"new run from {work / 'checkpoints' / '0'} (imported from {original}): its trainable "
        "weights (mapper, projector, LoRA), a fresh optimiser, step 0"
    ) in err
    assert "resumed" not in err
    record = json.loads((first / "run_start.json").read_text())
    assert record["init_from"] == str(work / "checkpoints" / "0") and record["step"] == 0
    assert record["imported_from"] == str(original)
    assert json.loads((first / "config.json").read_text())["train"]["init_from"] == str(work)
    assert logged_steps(first) == [1, 2]
    from_import = mapper_output(work)
    np.testing.assert_allclose(mapper_output(first, step=1), from_import, atol=1e-6, rtol=0)
    assert np.abs(mapper_output(first, step=2) - from_import).max() > 1e-4  # then it trains

    # a step of a run -> another run
    second = tmp_path / "second"
    source = first / "checkpoints" / "2"
    trainer.train(run_config(llm, corpus, steps=1, init_from=str(source)), second)
    assert f"new run from {source}: its trainable weights" in capsys.readouterr().err
    record = json.loads((second / "run_start.json").read_text())
    assert record["step"] == 2 and record["imported_from"] is None
    assert logged_steps(second) == [1]
    np.testing.assert_allclose(
        mapper_output(second, step=1), mapper_output(first, step=2), atol=1e-6, rtol=0
    )

    # a source of another model: one line naming the key, before anything is written
    other = run_config(llm, corpus, steps=1, init_from=str(source))
    other.mapper.dim = 64
    with pytest.raises(ConfigError) as raised:
        trainer.train(other, tmp_path / "other")
    assert str(raised.value) == (
        f"train.init_from: {source} was trained with mapper.dim 32, this run has 64"
    )
    assert not (tmp_path / "other").exists()


def test_an_import_is_never_trained_in_place(imported, tiny_run):
    work, _, llm, corpus = imported
    before = snapshot(work)
    with pytest.raises(ConfigError) as raised:
        trainer.train(run_config(llm, corpus, steps=1), work)
    message = str(raised.value)
    assert "\n" not in message and "is an import of" in message
    assert f"--config.train.init_from={work}" in message
    assert snapshot(work) == before
