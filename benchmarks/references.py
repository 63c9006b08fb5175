"""The PyTorch/peft MATS train step the benchmarks compare with, and the analytic FLOP count of
a MATS train step (shared by benchmarks/train_step.py and benchmarks/train_throughput.py).

`TorchMATS` is the step as the original code runs it: ClipCap's TransformerMapper and the
projector as torch modules (initialised with our initial weights, `copy_initial_weights`, so the
first losses agree), HF `LlamaForCausalLM` from the same GGUF wrapped by `peft.get_peft_model`,
noise on the CLAP embedding, `inputs_embeds` = [embedded head, prefix, embedded tail], the LM
head on the positions that predict the tail, masked cross-entropy, `backward()`,
`torch.optim.AdamW` over mapper + projector + LoRA (decay on matrices only, warmup then cosine,
the trainer's schedule).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np


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
    """Analytic FLOPs (multiply-add = 2) of a MATS train step on `batch` rows of `length`
    positions whose last `tail` positions are predicted (the LM head runs on those only):

    - LLM forward F_llm = 2 * B * T * (matmul weights of the blocks) + layers * 4 * B * T^2 * d
      (QK^T and PV, full T x T) + 2 * B * tail * d * V;
    - mapper + projector forward F_bridge (linear, the blocks on clip + prefix tokens,
      projector);
    - step = 2 * F_llm (forward + activation gradients; the base weights get no gradient; LoRA
      matmuls < 0.2%, ignored) + 3 * F_bridge (these weights are trained).

    Count one example at a time (batch 1, its own length and tail) to get the work on real
    positions only."""
    d, f, h = llm.hidden_size, llm.intermediate_size, llm.head_size
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


class TorchMATS:
    """The PyTorch/peft MATS train step (see module doc), on `device`.

    `tensors(batch, clap)` turns a `TrainingBatch` and its CLAP rows [B, clap_dim] into the
    step's inputs (outside any timing); `crop=True` cuts the tail to the batch's longest
    example, as the original code pads each batch (to its longest), not to `tail_length`.
    `step(inputs)` runs one optimiser step and returns the loss (a float: it waits for the
    device)."""

    def __init__(
        self,
        torch,
        config,
        gguf: Path,
        initial: dict[str, np.ndarray],
        mapper_config,
        llm_hidden: int,
        device: str = "cpu",
    ):
        import peft
        import transformers

        self.torch, self.device = torch, torch.device(device)
        t, lora = config.train, config.lora
        llm = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        self.peft_model = peft.get_peft_model(
            llm,
            peft.LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.targets),
                task_type="CAUSAL_LM",
            ),
        )
        self.bridge = torch_modules(torch, mapper_config, llm_hidden)
        copy_initial_weights(torch, initial, self.bridge, self.peft_model)
        self.peft_model.to(self.device).train()
        self.bridge.to(self.device).train()
        trained = [
            p
            for p in list(self.bridge.parameters()) + list(self.peft_model.parameters())
            if p.requires_grad
        ]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in trained if p.ndim >= 2], "weight_decay": t.weight_decay},
                {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=t.lr,
            betas=(t.b1, t.b2),
            eps=1e-8,
        )
        warmup, total = t.warmup_steps, max(t.steps, t.warmup_steps + 1)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: (
                s / warmup
                if s < warmup
                else 0.5
                * (1 + math.cos(math.pi * min(s - warmup, total - warmup) / (total - warmup)))
            ),
        )
        self.decoder = self.peft_model.base_model.model.model
        self.lm_head = self.peft_model.base_model.model.lm_head
        self.noise_std = math.sqrt(config.noise_variance)
        self.prefix_length = mapper_config.prefix_length

    def tensors(self, batch, clap: np.ndarray, *, crop: bool = False) -> dict[str, Any]:
        torch = self.torch
        width = int(batch.tail_mask.sum(axis=1).max()) if crop else batch.tail.shape[1]
        rows = batch.tail.shape[0]
        start = len(batch.head) + self.prefix_length
        on = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return {
            "head": on(batch.head.astype(np.int64)),
            "tail": on(batch.tail[:, :width].astype(np.int64)),
            "mask": torch.cat(
                [
                    torch.ones(rows, start, dtype=torch.long, device=self.device),
                    on(batch.tail_mask[:, :width].astype(np.int64)),
                ],
                dim=1,
            ),
            "loss_mask": on(batch.loss_mask[:, :width].astype(np.float32)),
            "clap": on(clap.astype(np.float32)),
            "start": start,
        }

    def step(self, inputs: dict[str, Any]) -> float:
        torch, F = self.torch, self.torch.nn.functional
        self.optimizer.zero_grad(set_to_none=True)
        x = F.normalize(inputs["clap"], dim=-1)
        x = F.normalize(x + self.noise_std * torch.randn_like(x), dim=-1)
        prefix = self.bridge["projector"](self.bridge["mapper"](x))
        embed, tail = self.decoder.embed_tokens, inputs["tail"]
        sequence = torch.cat(
            [embed(inputs["head"])[None].expand(tail.shape[0], -1, -1), prefix, embed(tail)], dim=1
        )
        hidden = self.decoder(inputs_embeds=sequence, attention_mask=inputs["mask"])
        logits = self.lm_head(hidden.last_hidden_state[:, inputs["start"] - 1 : -1])
        per_token = F.cross_entropy(logits.flatten(0, 1), tail.flatten(), reduction="none")
        loss_mask = inputs["loss_mask"].flatten()
        loss = (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss.item()
