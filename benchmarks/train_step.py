"""Steady-state MATS train step (configs/default.py): mats_jax's trainer step vs PyTorch/peft.

Run:  .venv/bin/python benchmarks/train_step.py [--runs 3] [--length 100] [--json PATH]

The workload is the embedded default run's step: SmolLM2-135M-Instruct (the embedded GGUF,
dequantised to float32, frozen) with LoRA r=8, alpha 32, dropout 0.1 on q_proj/v_proj, the
default config's transformer mapper (dim 256, 2 layers, 8 heads, clip/prefix length 8) and the
projector to the LLM's width, batch 8, one micro-batch. Each row is
[BOS "USER: <Speech>"] [8 prefix embeddings] [tail: "</Speech> tag instruction\\nASSISTANT:"
answer EOS], `--length` positions in all (data.tail_length is overridden to fit); the answers are
shipped-corpus captions joined until the row is full, so every position is a real token and the
loss covers the answer + EOS tokens. CLAP embeddings are random (the trainer reads cached ones).
- Ours: exactly the trainer's step: `build_mats(config)`, `steps.split`, `optim.adamw`,
  `steps.make_train_step` with the trainer's shardings on a 1-device mesh, compiled ahead
  of time with `.lower(...).compile()` as `mats_jax.train` does (the compile time is that call),
  then called with the state donated. Noise injection, LoRA dropout, AdamW with warmup-cosine
  learning rate and decay on matrices only, all as in training.
- PyTorch: the same step written out (`TorchMATS` in benchmarks/references.py): ClipCap's
  TransformerMapper and the projector as torch modules (initialised with our initial weights,
  so the first losses must agree), HF `LlamaForCausalLM` from the same GGUF wrapped by
  `peft.get_peft_model`, noise on the CLAP embedding, `inputs_embeds` = [embedded head, prefix,
  embedded tail], LM head on the positions that predict the tail, masked cross-entropy,
  `backward()`, `torch.optim.AdamW` over mapper + projector + LoRA (the same decay groups and
  schedule).
Times are medians over `--runs` steps after one first step; the timed steps of the two sides
alternate, so load from other processes hits both alike. PyTorch uses one thread per core.

FLOPs counted analytically (multiply-add = 2), the convention of benchmarks/lm_forward.py
(`flops_estimate` in benchmarks/references.py):
- LLM forward F_llm = 2 * B * T * (matmul weights of the 30 blocks)
  + 30 * 4 * B * T^2 * d (QK^T and PV, full T x T) + 2 * B * tail * d * V (LM head on the
  tail-predicting positions only, as both sides compute it);
- mapper + projector forward F_map (linear, 2 blocks on 16 tokens, projector);
- step = 2 * F_llm (forward + activation gradients; the base weights get no gradient; LoRA
  matmuls < 0.2%, ignored) + 3 * F_map (these weights are trained).
XLA's cost analysis of our compiled step is printed beside it. GFLOP/s are compared with each
framework's measured 2048^2 float32 matmul peak (benchmarks/common.py).

Targets: ours >= 1.0x PyTorch, and ours >= 50% of the JAX matmul peak. Exits non-zero on an
error or if the first-step losses disagree by more than 5%.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_json_option,
    check,
    load_note,
    matmul_peak_gflops,
    print_json,
    print_table,
    setup_torch,
    timed_pair,
)
from benchmarks.references import TorchMATS, flat_names, flops_estimate  # noqa: E402

CONFIG = ROOT / "configs" / "default.py"
LOSS_TOLERANCE = 0.05


def load_config(length: int, head_length: int):
    """configs/default.py's get_config(), with data.tail_length set so that a row is `length`
    positions (head + prefix + tail) and answers may fill the tail."""
    spec = importlib.util.spec_from_file_location("mats_default_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    tail = length - head_length - config.mapper.prefix_length
    config.data.tail_length = tail
    config.data.max_answer_tokens = tail
    config.train.grad_accum = 1
    return config


def training_batch(builder, batch: int):
    """A full `TrainingBatch`: shipped-corpus records, each answer a run of captions joined
    with ". " long enough to fill the tail (PromptBuilder cuts it and appends EOS)."""
    from mats_jax.data import corpus

    path = Path(corpus.__file__).parent / "train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()[:400]]
    instructions, tags, answers = [], [], []
    for i in range(batch):
        first = records[i]
        captions = [r["answer"] for r in records[i * 40 : (i + 1) * 40]]
        instructions.append(first["instruction"])
        tags.append(first["tag"])
        answers.append(". ".join(captions))
    out = builder.training_batch(instructions, tags, answers)
    if not out.tail_mask.all():
        raise RuntimeError("the answers did not fill the tail: take more captions per row")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--length", type=int, default=100, help="positions per row")
    add_json_option(parser)
    args = parser.parse_args(argv)

    torch = setup_torch()
    from mats_jax.mats.build import build_mats
    from mats_jax.mats.prompt import HEAD_TEXT, PromptBuilder
    from mats_jax.models.tokenizer import load_tokenizer
    from mats_jax.runtime.assets import smollm2_gguf_path
    from mats_jax.runtime.sharding import make_mesh
    from mats_jax.training import optim, steps

    peak = matmul_peak_gflops()
    path = smollm2_gguf_path()
    tokenizer = load_tokenizer(path)
    head_length = 1 + len(tokenizer(HEAD_TEXT, add_special_tokens=False).input_ids)
    config = load_config(args.length, head_length)
    t = config.train
    batch_size = t.batch_size

    # ---- ours: the trainer's step ---------------------------------------------------------
    model, tokenizer = build_mats(config)
    builder = PromptBuilder(
        tokenizer,
        tail_length=config.data.tail_length,
        max_answer_tokens=config.data.max_answer_tokens,
    )
    tb = training_batch(builder, batch_size)
    clap_np = (
        np.random.default_rng(0).standard_normal((batch_size, config.clap.dim)).astype(np.float32)
    )
    mapper_config, llm_config = model.mapper.config, model.llm.config
    length = len(tb.head) + mapper_config.prefix_length + tb.tail.shape[1]
    assert length == args.length, (length, args.length)

    mesh = make_mesh(config.mesh)
    rules = tuple(tuple(rule) for rule in config.sharding_rules)
    graphdef, trainable, rngs, frozen = steps.split(model)
    del model
    initial = flat_names(trainable)
    tx, schedule = optim.from_config(t)
    state, state_sharding, frozen, frozen_sharding = steps.place(
        trainable, rngs, frozen, tx, mesh, rules
    )
    batch_sharding = steps.batch_sharding(mesh, packed=False)
    step_fn = steps.make_train_step(
        graphdef,
        tx,
        seed=t.seed,
        schedule=schedule,
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=batch_sharding,
        remat=t.remat,
    )
    batch = jax.device_put(steps.Batch.from_micro_batches([tb], [clap_np]), batch_sharding)
    start = time.perf_counter()
    compiled = step_fn.lower(state, frozen, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    xla_flops = float(cost.get("flops", float("nan")))

    box, losses = {"state": state}, {}

    def run_ours():
        box["state"], metrics = compiled(box["state"], frozen, batch)
        losses.setdefault("ours", []).append(float(metrics["loss"]))  # blocks

    # ---- PyTorch: the same step -----------------------------------------------------------
    reference = TorchMATS(torch, config, path, initial, mapper_config, llm_config.hidden_size)
    torch_inputs = reference.tensors(tb, clap_np)

    def run_torch():
        losses.setdefault("torch", []).append(reference.step(torch_inputs))

    t_ours, t_torch = timed_pair(run_ours, run_torch, args.runs)

    flops = flops_estimate(llm_config, mapper_config, batch_size, length, tb.tail.shape[1])
    positions = batch_size * length
    targets_per_step = int(tb.loss_mask.sum())
    ours_gf, torch_gf = (
        flops["step"] / t_ours.median_s / 1e9,
        flops["step"] / t_torch.median_s / 1e9,
    )
    row = {
        "what": f"MATS step b{batch_size} x {length}",
        "ours_s": t_ours.median_s,
        "torch_s": t_torch.median_s,
        "speedup": t_torch.median_s / t_ours.median_s,
        "ours_tok_s": positions / t_ours.median_s,
        "torch_tok_s": positions / t_torch.median_s,
        "ours_compile_s": compile_s,
        "ours_first_s": t_ours.first_s,
        "torch_first_s": t_torch.first_s,
        "gflop": flops["step"] / 1e9,
        "xla_gflop": xla_flops / 1e9,
        "ours_gflops": ours_gf,
        "torch_gflops": torch_gf,
        "ours_pct_peak": 100 * ours_gf / peak["jax"],
        "torch_pct_peak": 100 * torch_gf / peak["torch"],
        "ours_spread": t_ours.spread,
        "torch_spread": t_torch.spread,
    }
    first_gap = abs(losses["ours"][0] - losses["torch"][0])
    row["first_loss_gap"] = first_gap
    print_table(
        f"MATS train step (configs/default.py), SmolLM2-135M + mapper dim "
        f"{mapper_config.dim} x {mapper_config.num_layers} layers + LoRA r={config.lora.rank}, "
        f"{args.runs} runs (matmul peak: JAX {peak['jax']:.0f}, torch {peak['torch']:.0f} "
        f"GFLOP/s)",
        [row],
    )
    print(
        f"\ntok_s = positions (batch x {length}) per second; {targets_per_step} loss tokens per "
        f"step; gflop = analytic count (2 F_llm + 3 F_bridge; F_llm = "
        f"{flops['llm_forward'] / 1e9:.1f}, F_bridge = {flops['bridge_forward'] / 1e9:.2f} GFLOP); "
        f"xla_gflop = XLA cost analysis of our compiled step; ours_compile_s = "
        f"lower + compile; first-step losses: ours {losses['ours'][0]:.4f}, torch "
        f"{losses['torch'][0]:.4f}; last: ours {losses['ours'][-1]:.4f}, torch "
        f"{losses['torch'][-1]:.4f}"
    )
    print(load_note())
    print_json(
        "train_step",
        {
            "peak_gflops": peak,
            "flops": flops,
            "xla_flops": xla_flops,
            "losses": losses,
            "rows": [row],
        },
        args.json,
    )
    if not all(np.isfinite(losses["ours"])) or first_gap > LOSS_TOLERANCE * abs(losses["torch"][0]):
        print(
            f"error: first-step losses disagree: ours {losses['ours'][0]} vs torch "
            f"{losses['torch'][0]}",
            file=sys.stderr,
        )
        return 2
    return check(
        {
            "train step >= 1.0x PyTorch": row["speedup"] >= 1.0,
            "train step >= 50% of the JAX matmul peak": row["ours_pct_peak"] >= 50,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
