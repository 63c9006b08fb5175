"""`python -m mats_jax.aot`: MATS-LLaMA's real train step — Vicuna-7B frozen in bf16, LoRA r=8, the
mapper and projector trained with AdamW, batch 96 — compiles through libtpu for v5p-8 and v4-32 on
this CPU and fits each chip's HBM; an unknown topology or a program that does not fit fails with
one line on stderr and exit status 2.

The full-size compiles take 1.5–2 minutes each on two cores (most of it libtpu's code generation
for 32 unrolled layers; MATS-LLaMA's rbg dropout keeps the mask generation cheap).
"""

import json
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

GiB = 2**30
VICUNA_7B_PLUS_PAD = (
    6_738_423_808  # Vicuna-7B v1.5 (6,738,415,616) + one [PAD] row in embedding and head
)


def aot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mats_jax.aot", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.mark.slow
@pytest.mark.parametrize("topology, chips, hbm_gib", [("v5p-8", 4, 95), ("v4-32", 16, 32)])
def test_mats_llama_train_step_compiles_and_fits(topology, chips, hbm_gib, tmp_path):
    report = tmp_path / "report.json"
    out = aot(
        "--config=configs/mats_llama.py",
        f"--topology={topology}",
        "--programs=train",
        f"--report={report}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "train " in out.stdout and "50% MFU" in out.stdout
    r = json.loads(report.read_text())
    assert r["chips"] == chips and r["chip"]["hbm_gib"] == hbm_gib
    # the real model: Vicuna-7B (+ [PAD]) frozen, ~113M of mapper and projector + 4M of LoRA trained
    assert r["params"]["frozen"] == VICUNA_7B_PLUS_PAD
    assert 115e6 < r["params"]["trainable"] < 120e6
    train = r["programs"]["train"]
    # every chip holds its share of the bf16 weights as arguments...
    assert train["arguments"] >= 2 * VICUNA_7B_PLUS_PAD / (r["mesh"]["fsdp"] * r["mesh"]["tensor"])
    # ...and the whole program fits the chip (the assertion this test exists for)
    assert train["fits"] and 0 < train["total"] <= hbm_gib * GiB
    # it is the full step: 16 packed rows × 512 positions, and XLA's FLOPs on all chips are the
    # model's 4·N·tokens (frozen LLM) + 6·N per use (trained), give or take attention
    assert r["train"]["tokens"] == 16 * 512
    assert 0.95 < r["train"]["xla_over_model"] < 1.3


def test_unknown_topology_is_one_line():
    out = aot("--config=configs/mats_llama.py", "--topology=v9-8")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert (
        out.stderr.startswith("error: unknown topology 'v9-8'; known: v4-8, ")
        and "v5p-8" in out.stderr
    )


def test_config_that_does_not_split_over_the_topology_is_one_line():
    out = aot("--config=configs/mats_llama.py", "--topology=v5p-128")  # 64 chips, 16 rows
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: micro-batch 16 (train.batch_size / train.grad_accum) is not "
        "divisible by the data axes data×fsdp = 64"
    )


@pytest.mark.slow
def test_mats_llama_does_not_fit_four_v5e_chips():
    # 16 GiB per chip, data parallel: the replicated 13.5 GB of weights leave no room for
    # 4 packed rows of 512 positions
    out = aot("--config=configs/mats_llama.py", "--topology=v5e-4", "--programs=train")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("error: the train program does not fit: RESOURCE_EXHAUSTED")
    assert "--config.mesh.fsdp" in out.stderr


@pytest.mark.slow
def test_both_programs_of_a_small_config_and_a_budget_they_exceed(tmp_path):
    """The embedded default (SmolLM2-135M) compiles train and generate for four v5e chips (data
    parallel); against a 0.5 GiB budget the report still comes out, then one line says what does
    not fit."""
    report = tmp_path / "report.json"
    out = aot(
        "--config=configs/default.py",
        "--topology=v5e-4",
        "--hbm_gib=0.5",
        f"--report={report}",
        "--config.lora.dropout=0",
    )  # no threefry dropout masks: a minute less of code generation
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert (
        out.stderr.startswith("error: the train program needs ")
        and "more than the 0.5 GiB of HBM" in out.stderr
    )
    r = json.loads(report.read_text())
    assert not r["fits"] and r["hbm_budget_bytes"] == GiB // 2
    for name in ("train", "generate"):
        program = r["programs"][name]
        assert program["total"] > GiB // 2 and not program["fits"] and program["flops"] > 0
    # the frozen SmolLM2 (float32 in this config) is an argument of both programs
    assert r["programs"]["generate"]["arguments"] >= 4 * r["params"]["frozen"]
    # each chip decodes its own prompts: beam search keeps its beams and their KV caches on the
    # chip (reordering the caches by global row once all-gathered them at every step)
    assert "all-gather" not in r["programs"]["generate"]["collectives"]
