"""SmolLM2-135M-Instruct forward and LoRA train step, 8 x 128 tokens: mats_jax vs PyTorch/peft.

Run:  .venv/bin/python benchmarks/lm_forward.py [--runs 3] [--batch 8] [--length 128] [--json PATH]

Both sides load the same embedded GGUF (dequantised to float32), in the same process:
- forward: logits [8, 128, V] (float32) for random token ids. Ours: `nnx.split` once, then a
  plain `jax.jit` of merge + call; PyTorch: `model(ids).logits` under `inference_mode`.
- LoRA train step: r=8, alpha=32 on q_proj/v_proj, dropout 0.1 (active), AdamW (lr 1e-4,
  weight decay 0.01) over the adapters only, loss = next-token cross-entropy on every position
  (`mats_jax.models.losses.next_token_loss` / `F.cross_entropy`). Ours: `nnx.split(model, LoRAParam,
  RngState, ...)`, `jax.value_and_grad` w.r.t. the LoRA state only, `optax.adamw`, one `jax.jit`
  with the LoRA params, optimizer state and dropout RNG state donated. PyTorch:
  `peft.get_peft_model`, `torch.optim.AdamW`, `loss.backward()`, `opt.step()`.
Times are medians over `--runs` runs after one first call (`compile_s` = first - median); the
timed runs of the two sides alternate, so load from other processes hits both alike.

FLOPs counted (multiply-add = 2):
- forward F = 2 * tokens * (matmul weights of the 30 blocks + LM head d*V)
              + 30 layers * 4 * B * T^2 * d   (QK^T and PV, full T x T as both sides compute it;
              the embedding lookup and norms/activations are not counted);
- train step = 2F: forward plus the activation gradients (a backward through every matmul once);
  with only LoRA trainable no base-weight gradients are computed, so the usual "3F" would
  overstate the work (it is printed as well, for reference). LoRA matmuls are < 0.2% and ignored.
GFLOP/s is compared with the measured 2048^2 float32 matmul peak of each framework.

Target: ours >= 1.0x PyTorch on both. Exits non-zero on an error or if the two losses disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_json_option,
    check,
    load_note,
    matmul_peak_gflops,
    print_json,  # noqa: E402
    print_table,
    setup_torch,
    timed_pair,
)

LR, WEIGHT_DECAY = 1e-4, 0.01


def forward_flops(config, batch: int, length: int) -> float:
    d, f, h = config.hidden_size, config.intermediate_size, config.head_size
    qkvo = d * h * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
    per_layer = qkvo + 3 * d * f
    tokens = batch * length
    dense = 2 * tokens * (config.num_hidden_layers * per_layer + d * config.vocab_size)
    attention = config.num_hidden_layers * 4 * batch * length**2 * h * config.num_attention_heads
    return float(dense + attention)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    add_json_option(parser)
    args = parser.parse_args(argv)

    torch = setup_torch()
    import optax
    import peft
    import torch.nn.functional as F
    import transformers
    from flax import nnx

    from mats_jax.convert.llm import load_llm
    from mats_jax.models.lora import add_lora
    from mats_jax.models.losses import next_token_loss
    from mats_jax.runtime.assets import smollm2_gguf_path

    peak = matmul_peak_gflops()
    path = smollm2_gguf_path()
    ours = load_llm(path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    config = ours.config
    ids_np = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, args.length))
    ids = jnp.asarray(ids_np, jnp.int32)
    ids_t = torch.tensor(ids_np, dtype=torch.long)
    flops = forward_flops(config, args.batch, args.length)
    rows, result = [], {"forward_flops": flops, "peak_gflops": peak}

    # ---- forward --------------------------------------------------------------------------
    graphdef, state = nnx.split(ours)

    @jax.jit
    def forward(state, ids):
        return nnx.merge(graphdef, state)(ids)[0]

    theirs.eval()

    def torch_forward():
        with torch.inference_mode():
            return theirs(ids_t).logits

    t_ours, t_torch = timed_pair(
        lambda: jax.block_until_ready(forward(state, ids)),  # noqa: F821 (runs before `del state`)
        torch_forward,
        args.runs,
    )
    diff = float(np.abs(np.asarray(forward(state, ids)) - torch_forward().numpy()).max())
    rows.append(_row("forward", flops, t_ours, t_torch, peak) | {"max_abs_diff": diff})
    del state

    # ---- LoRA train step ------------------------------------------------------------------
    add_lora(ours, targets=("q_proj", "v_proj"), rank=8, alpha=32.0, dropout=0.1, rngs=nnx.Rngs(0))
    ours.train()
    graphdef, lora, rng_state, frozen = nnx.split(ours, nnx.LoRAParam, nnx.RngState, ...)
    optimizer = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
    opt_state = optimizer.init(lora)
    # position t predicts token t + 1; the last position has no target and is masked out
    # (masking instead of slicing logits[:, :-1] saves a copy of the [B, T, V] logits)
    targets = jnp.roll(ids, -1, axis=1)
    mask = jnp.ones(ids.shape, jnp.bool_).at[:, -1].set(False)

    def train_step(lora, opt_state, rng_state, frozen, ids):
        def loss_fn(lora, rng_state):
            model = nnx.merge(graphdef, lora, rng_state, frozen, copy=True)
            logits = model(ids)[0]
            loss, _ = next_token_loss(logits, targets, mask)
            return loss, nnx.state(model, nnx.RngState)

        (loss, rng_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(lora, rng_state)
        updates, opt_state = optimizer.update(grads, opt_state, lora)
        return optax.apply_updates(lora, updates), opt_state, rng_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    box = {"lora": lora, "opt": opt_state, "rng": rng_state}
    losses = {}

    def run_ours():
        box["lora"], box["opt"], box["rng"], loss = step(
            box["lora"], box["opt"], box["rng"], frozen, ids
        )
        losses["ours"] = float(loss)  # blocks

    lora_config = peft.LoraConfig(
        r=8,
        lora_alpha=32,
        lora_dropout=0.1,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    peft_model = peft.get_peft_model(theirs, lora_config)
    peft_model.train()
    torch_opt = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=LR, weight_decay=WEIGHT_DECAY
    )

    labels_t = torch.roll(ids_t, -1, dims=1)
    labels_t[:, -1] = -100

    def run_torch():
        torch_opt.zero_grad(set_to_none=True)
        logits = peft_model(input_ids=ids_t).logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels_t.flatten(), ignore_index=-100)
        loss.backward()
        torch_opt.step()
        losses["torch"] = loss.item()

    t_ours, t_torch = timed_pair(run_ours, run_torch, args.runs)
    loss_gap = abs(losses["ours"] - losses["torch"])
    rows.append(
        _row("LoRA train step (2F)", 2 * flops, t_ours, t_torch, peak) | {"max_abs_diff": loss_gap}
    )
    result["train_gflops_3F_convention"] = {
        "ours": 3 * flops / t_ours.median_s / 1e9,
        "torch": 3 * flops / t_torch.median_s / 1e9,
    }

    print_table(
        f"SmolLM2-135M, {args.batch} x {args.length} tokens, {args.runs} runs "
        f"(matmul peak: JAX {peak['jax']:.0f}, torch {peak['torch']:.0f} GFLOP/s)",
        rows,
    )
    print(
        f"\nforward = {flops / 1e9:.1f} GFLOP; train step counted as 2F = {2 * flops / 1e9:.1f} "
        f"GFLOP (3F convention: ours {result['train_gflops_3F_convention']['ours']:.0f}, torch "
        f"{result['train_gflops_3F_convention']['torch']:.0f} GFLOP/s); "
        f"max_abs_diff = logits diff (forward) / loss gap after the same number of steps "
        f"(dropout masks differ)"
    )
    print(load_note())
    result["rows"] = rows
    print_json("lm_forward", result, args.json)
    if not np.isfinite(losses["ours"]) or loss_gap > 0.05 * abs(losses["torch"]):
        print(
            f"error: losses disagree: ours {losses['ours']} vs torch {losses['torch']}",
            file=sys.stderr,
        )
        return 2
    return check({f"{r['what']} >= 1.0x PyTorch": r["speedup"] >= 1.0 for r in rows})


def _row(what, flops, t_ours, t_torch, peak) -> dict:
    ours_gf, torch_gf = flops / t_ours.median_s / 1e9, flops / t_torch.median_s / 1e9
    return {
        "what": what,
        "ours_s": t_ours.median_s,
        "torch_s": t_torch.median_s,
        "speedup": t_torch.median_s / t_ours.median_s,
        "ours_compile_s": t_ours.compile_s,
        "torch_first_s": t_torch.first_s,
        "ours_gflops": ours_gf,
        "torch_gflops": torch_gf,
        "ours_pct_peak": 100 * ours_gf / peak["jax"],
        "torch_pct_peak": 100 * torch_gf / peak["torch"],
        "ours_spread": t_ours.spread,
        "torch_spread": t_torch.spread,
    }


if __name__ == "__main__":
    sys.exit(main())
