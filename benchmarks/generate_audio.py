"""Listening end to end: clips per second from audio files to captions, mats_jax vs PyTorch.

Run:  .venv/bin/python benchmarks/generate_audio.py [--runs 3] [--clips 16] [--batch 8]
      [--max-new-tokens 32] [--json PATH]

The workload is MATS inference as the paper runs it, on the real ESC-50 clips of ../shared/data:
load the clips (7 s, 44.1 kHz), CLAP audio embedding (msclap 2023, random weights), Santa
(bank of 5,000 synthetic text embeddings in 100 clusters), mapper + projector (the paper's sizes:
8 blocks, 1024 wide, 40 prefix tokens), the prompt, and beam-4 generation with the paper's
settings on SmolLM2-135M-Instruct with LoRA (r 8, q/v; B = 0, as after initialisation).
- ours: `Listener.embed_audio` + `Listener.describe` — the code `python -m mats_jax.generate` runs.
- PyTorch, the original stack: msclap's `audio_encoder`, Santa one embedding at a time (DESIGN §2.5,
  as in the original code), the mapper written in PyTorch with the original parameter names, and
  transformers' `generate(inputs_embeds=...)` on the peft-wrapped LLM.
Both sides hold the same weights and read the clips with the same loader (msclap's loading,
checked byte for byte in tests/clap/test_audio.py), so the generated tokens should agree; the
agreement is printed. Medians over --runs after one first call (which includes JAX's compiles:
compile_s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_json_option,
    check,
    load_note,
    print_json,
    print_table,
    setup_torch,
    timed_pair,
)
from benchmarks.santa import original_santa, synthetic_bank  # noqa: E402
from tests.references.msclap import msclap_reference  # noqa: E402

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio" / "esc50"


def torch_mapper(torch, config, state: dict):
    """The original TransformerMapper + projector in PyTorch, loaded from the original key names."""
    nn = torch.nn
    dim, heads = config.mapper.dim, config.mapper.num_heads

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.to_queries = nn.Linear(dim, dim, bias=False)
            self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
            self.project = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q = self.to_queries(x).reshape(b, n, heads, c // heads)
            kv = self.to_keys_values(x).reshape(b, n, 2, heads, c // heads)
            scores = torch.einsum("bnhd,bmhd->bnmh", q, kv[:, :, 0]) * (c // heads) ** -0.5
            out = torch.einsum("bnmh,bmhd->bnhd", scores.softmax(dim=2), kv[:, :, 1])
            return self.project(out.reshape(b, n, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = Attention()
            self.mlp = nn.Sequential()
            self.mlp.fc1 = nn.Linear(dim, int(dim * config.mapper.mlp_ratio))
            self.mlp.act = nn.ReLU()
            self.mlp.fc2 = nn.Linear(int(dim * config.mapper.mlp_ratio), dim)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class Mapper(nn.Module):
        def __init__(self):
            super().__init__()
            m = config.mapper
            self.linear = nn.Linear(config.clap.dim, m.clip_length * dim)
            self.prefix_const = nn.Parameter(torch.zeros(m.prefix_length, dim))
            self.transformer = nn.Module()
            self.transformer.layers = nn.ModuleList([Block() for _ in range(m.num_layers)])

        def forward(self, x):
            x = self.linear(nn.functional.normalize(x, dim=-1)).reshape(
                len(x), config.mapper.clip_length, dim
            )
            x = torch.cat([x, self.prefix_const.expand(len(x), -1, -1)], dim=1)
            for layer in self.transformer.layers:
                x = layer(x)
            return x[:, config.mapper.clip_length :]

    class Bridge(nn.Module):
        def __init__(self):
            super().__init__()
            self.audio_mapper = Mapper()
            self.audio_llama_proj = nn.Linear(dim, state["audio_llama_proj.weight"].shape[0])

        def forward(self, x):
            return self.audio_llama_proj(self.audio_mapper(x))

    bridge = Bridge()
    bridge.load_state_dict(
        {
            k: torch.from_numpy(np.array(v))
            for k, v in state.items()
            if k.startswith(("audio_mapper.", "audio_llama_proj."))
        }
    )
    return bridge.eval()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    add_json_option(parser)
    args = parser.parse_args()
    torch = setup_torch()
    import peft
    import transformers
    from flax import nnx

    from mats_jax.clap.audio import load_batch
    from mats_jax.config import base
    from mats_jax.convert.clap import from_msclap_state
    from mats_jax.convert.mats import mats_keymap
    from mats_jax.inference.listener import Listener, instruction_for
    from mats_jax.mats.build import build_mats
    from mats_jax.mats.model import TRAINABLE
    from mats_jax.mats.prompt import PromptBuilder
    from mats_jax.mats.santa import build_bank
    from mats_jax.runtime.assets import smollm2_gguf_path

    config = base()
    model, tokenizer = build_mats(config)
    model.eval()
    clap_torch = msclap_reference()
    clap = from_msclap_state(
        {k: v.detach().numpy() for k, v in clap_torch.state_dict().items()}, source="msclap"
    )
    bank = build_bank(
        synthetic_bank(config.santa.bank_size),
        config.santa.clusters,
        config.santa.iterations,
        jax.random.key(0),
    )
    builder = PromptBuilder(tokenizer, tail_length=config.data.tail_length)
    listener = Listener(model, tokenizer, clap, builder, bank, config.santa, None, 0)
    generation = listener.paper_generation(max_new_tokens=args.max_new_tokens)
    files = sorted(CLIPS.glob("*.wav"))[: args.clips]
    batches = [files[i : i + args.batch] for i in range(0, len(files), args.batch)]
    # the noise Santa draws in `describe` (seed 0); benchmarks/santa.py's constants are the paper's
    noise = np.asarray(
        jax.random.normal(jax.random.key(0), (args.batch, config.santa.top_l, config.clap.dim))
    )

    # PyTorch side: the same weights
    trainable = {
        ".".join(map(str, p)): np.asarray(v)
        for p, v in nnx.to_flat_state(nnx.state(model, TRAINABLE))
    }
    bridge = torch_mapper(torch, config, mats_keymap().to_torch(trainable))
    path = smollm2_gguf_path()
    llm = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    llm = peft.get_peft_model(
        llm,
        peft.LoraConfig(
            r=config.lora.rank,
            lora_alpha=config.lora.alpha,
            target_modules=list(config.lora.targets),
            lora_dropout=config.lora.dropout,
        ),
    ).eval()
    members = [
        torch.from_numpy(np.array(row[:count])) for row, count in zip(bank.members, bank.counts)
    ]
    bank_t, centres_t = (
        torch.from_numpy(np.array(bank.embeddings)),
        torch.from_numpy(np.array(bank.centres)),
    )
    prompt = builder.inference_batch(
        [instruction_for("caption", None)] * args.batch, [""] * args.batch
    )
    head, tail = torch.from_numpy(np.array(prompt.head)), torch.from_numpy(np.array(prompt.tail))

    def ours() -> list[str]:
        ids = []
        for batch in batches:
            embeddings, _, _ = listener.embed_audio(batch, batch_size=args.batch)
            ids += listener.describe(embeddings, generation=generation)
        return ids

    def theirs() -> list[str]:
        texts = []
        with torch.inference_mode():
            for batch in batches:
                clips, _ = load_batch(batch, sample_rate=44100, duration=7.0, crop="center")
                audio = clap_torch.audio_encoder(torch.from_numpy(clips))[0]
                mixed = original_santa(
                    torch, bank_t, centres_t, members, audio, torch.from_numpy(noise[: len(batch)])
                )
                prefix = bridge(mixed)
                embed = llm.get_input_embeddings()
                n = len(batch)
                sequence = torch.cat(
                    [embed(head).expand(n, -1, -1), prefix, embed(tail[:n])], dim=1
                )
                new = llm.generate(
                    inputs_embeds=sequence,
                    attention_mask=torch.ones(sequence.shape[:2], dtype=torch.long),
                    num_beams=4,
                    do_sample=False,
                    max_new_tokens=args.max_new_tokens,
                    min_length=1,
                    no_repeat_ngram_size=2,
                    repetition_penalty=2.0,
                    length_penalty=1.0,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=builder.pad,
                )
                texts += [tokenizer.decode(row, skip_special_tokens=True) for row in new]
        return texts

    t_ours, t_theirs = timed_pair(ours, theirs, args.runs)
    from mats_jax.inference.listener import postprocess

    ours_texts, their_texts = ours(), [postprocess(t) for t in theirs()]
    same = float(np.mean([a == b for a, b in zip(ours_texts, their_texts)]))
    row = {
        "clips": len(files),
        "batch": args.batch,
        "new_tokens": args.max_new_tokens,
        "ours_clips_per_s": len(files) / t_ours.median_s,
        "pytorch_clips_per_s": len(files) / t_theirs.median_s,
        "speedup": t_theirs.median_s / t_ours.median_s,
        "compile_s": t_ours.compile_s,
        "same_text": same,
    }
    print_table("listening end to end (load, CLAP, Santa, prefix, beam-4)", [row])
    print(f"ours: {ours_texts[0]!r}\nPyTorch: {their_texts[0]!r}")
    print(load_note())
    print_json("generate_audio", row, args.json)
    return check({"ours faster than the PyTorch original end to end": row["speedup"] > 1.0})


if __name__ == "__main__":
    sys.exit(main())
