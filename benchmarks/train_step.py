"""Steady-state MATS train step (configs/default.py): mats_jax's trainer step vs PyTorch/peft.

Run:  .venv/bin/python benchmarks/train_step.py [--runs 3] [--length 100]

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
- PyTorch: the same step written out: ClipCap's TransformerMapper and the projector as torch
  modules (initialised with our initial weights, so the first losses must agree), HF
  `LlamaForCausalLM` from the same GGUF wrapped by `peft.get_peft_model`, noise on the CLAP
  embedding, `inputs_embeds` = [embedded head, prefix, embedded tail], LM head on the positions
  that predict the tail, masked cross-entropy, `backward()`, `torch.optim.AdamW` over mapper +
  projector + LoRA (the same decay groups and schedule).
Times are medians over `--runs` steps after one first step; the timed steps of the two sides
alternate, so load from other processes hits both alike. PyTorch uses one thread per core.

FLOPs counted analytically (multiply-add = 2), the convention of benchmarks/lm_forward.py:
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
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    check,
    load_note,
    matmul_peak_gflops,
    print_json,
    print_table,
    setup_torch,
    timed_pair,
)

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


# ---- the PyTorch step -----------------------------------------------------------------------


def torch_modules(torch, mapper_config, llm_hidden: int):
    """ClipCap's TransformerMapper (DESIGN §2.2) + projector, with our module names."""
    nn, F = torch.nn, torch.nn.functional

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.to_queries = nn.Linear(dim, dim, bias=False)
            self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
            self.project = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            h = self.heads
            q = self.to_queries(x).reshape(b, n, h, c // h)
            kv = self.to_keys_values(x).reshape(b, n, 2, h, c // h)
            k, v = kv[:, :, 0], kv[:, :, 1]
            attention = (torch.einsum("bnhd,bmhd->bnmh", q, k) * (c // h) ** -0.5).softmax(dim=2)
            return self.project(torch.einsum("bnmh,bmhd->bnhd", attention, v).reshape(b, n, c))

    class MLP(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, dim, heads, mlp_ratio):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn, self.mlp = Attention(dim, heads), MLP(dim, int(dim * mlp_ratio))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class TransformerMapper(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.linear = nn.Linear(c.clap_dim, c.clip_length * c.dim)
            self.prefix_const = nn.Parameter(torch.randn(c.prefix_length, c.dim))
            self.layers = nn.ModuleList(
                [Block(c.dim, c.num_heads, c.mlp_ratio) for _ in range(c.num_layers)]
            )

        def forward(self, clap):
            c = self.c
            x = self.linear(F.normalize(clap, dim=-1)).view(-1, c.clip_length, c.dim)
            x = torch.cat([x, self.prefix_const.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
            for layer in self.layers:
                x = layer(x)
            return x[:, c.clip_length :]

    return nn.ModuleDict(
        {
            "mapper": TransformerMapper(mapper_config),
            "projector": nn.Linear(mapper_config.dim, llm_hidden),
        }
    )


def flat_names(state) -> dict[str, np.ndarray]:
    """Our state as {"mapper.layers.0.attn.project.kernel": array, ...}."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        out[".".join(k for k in keys if k != "value")] = np.asarray(value)
    return out


def copy_initial_weights(torch, ours: dict[str, np.ndarray], bridge, peft_model) -> None:
    """Our initial mapper, projector and LoRA A weights into the torch modules (kernels [in, out]
    -> weights [out, in]; LayerNorm scale -> weight)."""
    targets = dict(bridge.named_parameters())
    targets |= {
        name.replace("base_model.model.model.", "llm."): p
        for name, p in peft_model.named_parameters()
        if "lora_" in name
    }
    copied = 0
    for name, value in ours.items():
        if name.startswith("llm."):
            torch_name = name.replace("lora_a", "lora_A.default.weight").replace(
                "lora_b", "lora_B.default.weight"
            )
            value = value.T
        else:
            torch_name = name.replace(".kernel", ".weight").replace(".scale", ".weight")
            if name.endswith(".kernel"):
                value = value.T
        target = targets[torch_name]
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{name} {value.shape} -> {torch_name} {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.array(value)))
        copied += 1
    if copied != len(targets):
        raise ValueError(f"copied {copied} of {len(targets)} torch parameters")


def flops_estimate(llm, mapper, batch: int, length: int, tail: int) -> dict[str, float]:
    d, f, h = llm.hidden_size, llm.intermediate_size, llm.head_dim
    qkvo = d * h * (2 * llm.num_attention_heads + 2 * llm.num_key_value_heads)
    blocks = 2 * batch * length * llm.num_hidden_layers * (qkvo + 3 * d * f)
    attention = llm.num_hidden_layers * 4 * batch * length**2 * h * llm.num_attention_heads
    head = 2 * batch * tail * d * llm.vocab_size
    n = mapper.clip_length + mapper.prefix_length
    hidden = int(mapper.dim * mapper.mlp_ratio)
    block = (
        2 * batch * n * (4 * mapper.dim**2 + 2 * mapper.dim * hidden)
        + 4 * batch * n**2 * mapper.dim
    )
    bridge = (
        2 * batch * mapper.clap_dim * mapper.clip_length * mapper.dim
        + mapper.num_layers * block
        + 2 * batch * mapper.prefix_length * mapper.dim * d
    )
    llm_forward = blocks + attention + head
    return {
        "llm_forward": float(llm_forward),
        "bridge_forward": float(bridge),
        "step": float(2 * llm_forward + 3 * bridge),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--length", type=int, default=100, help="positions per row")
    args = parser.parse_args(argv)

    torch = setup_torch()
    import peft
    import torch.nn.functional as F
    import transformers

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
    batch_sharding = steps.batch_sharding(mesh)
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
    llm = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    lora = config.lora
    peft_model = peft.get_peft_model(
        llm,
        peft.LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.targets),
            task_type="CAUSAL_LM",
        ),
    )
    peft_model.train()
    bridge = torch_modules(torch, mapper_config, llm_config.hidden_size)
    copy_initial_weights(torch, initial, bridge, peft_model)
    bridge.train()
    trained = [
        (n, p)
        for n, p in list(bridge.named_parameters()) + list(peft_model.named_parameters())
        if p.requires_grad
    ]
    decay = [p for _, p in trained if p.ndim >= 2]
    no_decay = [p for _, p in trained if p.ndim < 2]
    torch_opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": t.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=t.lr,
        betas=(t.b1, t.b2),
        eps=1e-8,
    )
    warmup, total = t.warmup_steps, max(t.steps, t.warmup_steps + 1)
    torch_schedule = torch.optim.lr_scheduler.LambdaLR(
        torch_opt,
        lambda s: (
            s / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * min(s - warmup, total - warmup) / (total - warmup)))
        ),
    )

    decoder = peft_model.base_model.model.model
    lm_head = peft_model.base_model.model.lm_head
    embed_tokens = decoder.embed_tokens
    head_t = torch.from_numpy(tb.head.astype(np.int64))
    tail_t = torch.from_numpy(tb.tail.astype(np.int64))
    prefix_start = len(tb.head)
    start_t = prefix_start + mapper_config.prefix_length
    mask_t = torch.cat(
        [
            torch.ones(batch_size, start_t, dtype=torch.long),
            torch.from_numpy(tb.tail_mask.astype(np.int64)),
        ],
        dim=1,
    )
    loss_mask_t = torch.from_numpy(tb.loss_mask.astype(np.float32))
    clap_t = torch.from_numpy(clap_np)
    noise_std = math.sqrt(config.noise_variance)

    def run_torch():
        torch_opt.zero_grad(set_to_none=True)
        x = F.normalize(clap_t, dim=-1)
        x = F.normalize(x + noise_std * torch.randn_like(x), dim=-1)
        prefix = bridge["projector"](bridge["mapper"](x))
        sequence = torch.cat(
            [embed_tokens(head_t)[None].expand(batch_size, -1, -1), prefix, embed_tokens(tail_t)],
            dim=1,
        )
        hidden = decoder(inputs_embeds=sequence, attention_mask=mask_t).last_hidden_state
        logits = lm_head(hidden[:, start_t - 1 : -1])
        per_token = F.cross_entropy(logits.flatten(0, 1), tail_t.flatten(), reduction="none")
        loss = (per_token * loss_mask_t.flatten()).sum() / loss_mask_t.sum().clamp(min=1)
        loss.backward()
        torch_opt.step()
        torch_schedule.step()
        losses.setdefault("torch", []).append(loss.item())

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
        f"{mapper_config.dim} x {mapper_config.num_layers} layers + LoRA r={lora.rank}, "
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
