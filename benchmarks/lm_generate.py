"""SmolLM2-135M-Instruct generation speed: mats_jax `generate` vs transformers' `generate`.

Run:  .venv/bin/python benchmarks/lm_generate.py [--runs 3] [--greedy-tokens 64] [--beam-tokens 32]
      [--json PATH]

Both sides load the same embedded GGUF (dequantised to float32) and decode the same prompt in the
same process, batch 1:
- greedy: exactly `--greedy-tokens` new tokens (EOS is kept but forbidden until then, with
  `min_new_tokens` in transformers and the equivalent `min_length` here), so the counts match;
- beam-4 with the MATS paper settings (no_repeat_ngram_size 2, repetition_penalty 2.0,
  length_penalty 1.0), again forced to exactly `--beam-tokens` new tokens.
tokens/s = new tokens of the returned sequence / wall time of one `generate` call (prefill
included), median over `--runs` runs after one first call. For JAX the first call includes trace
and compile; `compile_s` = first call - median run.

The greedy bound: at batch 1 every token reads every weight once, so
  bound tokens/s = measured copy bandwidth / weight bytes per token,
with the bandwidth (bytes read + written by a 512 MB numpy copy, median of 5) measured before and
after each mode and the best of those samples used (the machine is shared; load lowers it),
with weight bytes = all float32 parameters, the tied embedding counted once (as the LM head; the
embedding lookup reads one row). KV-cache reads (< 1 MB here) are ignored.

Targets: greedy >= 2x transformers and >= 70% of the bound; beam >= 2x transformers.
Exits non-zero on an error or if the two sides generate different token counts.
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
    copy_bandwidth_gbs,
    load_note,
    print_json,  # noqa: E402
    print_table,
    setup_torch,
    timed_pair,
)

PROMPT = (
    "Describe the following audio in a caption. "
    "A dog barks while a car passes by on a rainy street."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--greedy-tokens", type=int, default=64)
    parser.add_argument("--beam-tokens", type=int, default=32)
    add_json_option(parser)
    args = parser.parse_args(argv)

    torch = setup_torch()
    import transformers
    from flax import nnx

    from mats_jax.convert.llm import load_llm
    from mats_jax.models.sampler import GenerationConfig, generate
    from mats_jax.models.tokenizer import load_tokenizer
    from mats_jax.runtime.assets import smollm2_gguf_path

    path = smollm2_gguf_path()
    ours = load_llm(path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    tokenizer = load_tokenizer(path)
    ids = tokenizer(PROMPT, return_tensors="np").input_ids.astype(np.int32)
    prompt_len = ids.shape[1]
    eos = theirs.generation_config.eos_token_id
    eos = eos if isinstance(eos, int) else eos[0]

    params = sum(x.size for x in jax.tree.leaves(nnx.state(ours, nnx.Param)))
    weight_bytes = sum(
        x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(ours, nnx.Param))
    )
    bandwidths = [copy_bandwidth_gbs()]  # measured again after each mode: the machine is shared

    settings = {
        "greedy": dict(n=args.greedy_tokens, hf={}, ours={}),
        "beam-4": dict(
            n=args.beam_tokens,
            hf=dict(
                num_beams=4,
                no_repeat_ngram_size=2,
                repetition_penalty=2.0,
                length_penalty=1.0,
                early_stopping=False,
            ),
            ours=dict(
                num_beams=4,
                no_repeat_ngram_size=2,
                repetition_penalty=2.0,
                length_penalty=1.0,
                early_stopping=False,
            ),
        ),
    }
    rows, result = [], {"weight_bytes": weight_bytes, "params": params}
    for name, s in settings.items():
        n = s["n"]
        config = GenerationConfig(
            max_new_tokens=n,
            min_length=prompt_len + n,
            eos_token_id=eos,
            pad_token_id=eos,
            **s["ours"],
        )
        out = {}

        def run_ours():
            out["ours"] = generate(ours, tokens=ids, config=config)  # returns numpy: synced

        torch_ids = torch.tensor(ids, dtype=torch.long)

        def run_hf(new_tokens=n):
            with torch.inference_mode():
                seq = theirs.generate(
                    torch_ids,
                    attention_mask=torch.ones_like(torch_ids),
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=eos,
                    **s["hf"],
                )
            out["hf"] = seq[:, prompt_len:].numpy()

        # transformers has nothing to compile: a 2-token call warms it up; timed runs alternate
        t_ours, t_hf = timed_pair(run_ours, run_hf, args.runs, first_b=lambda: run_hf(2))
        bandwidths.append(copy_bandwidth_gbs())
        n_ours, n_hf = out["ours"].shape[1], out["hf"].shape[1]
        if n_ours != n or n_hf != n:
            print(
                f"error: {name}: generated {n_ours} (ours) / {n_hf} (transformers) tokens, "
                f"expected {n}",
                file=sys.stderr,
            )
            return 2
        same = int(np.cumprod(out["ours"][0] == out["hf"][0]).sum())
        tps_ours, tps_hf = n / t_ours.median_s, n / t_hf.median_s
        row = {
            "mode": name,
            "new_tokens": n,
            "ours_tok_s": tps_ours,
            "hf_tok_s": tps_hf,
            "speedup": tps_ours / tps_hf,
            "ours_compile_s": t_ours.compile_s,
            "ours_spread": t_ours.spread,
            "hf_spread": t_hf.spread,
            "same_prefix": f"{same}/{n}",
        }
        row["ours_ms_per_token"] = 1e3 * t_ours.median_s / n
        rows.append(row)
        result[name] = {**row, "ours_times_s": t_ours.times_s, "hf_times_s": t_hf.times_s}

    bandwidth = max(bandwidths)  # the least-disturbed sample: the bound is what the memory can do
    bound_tps = bandwidth * 1e9 / weight_bytes
    rows[0]["pct_of_bound"] = result["greedy"]["pct_of_bound"] = (
        100 * rows[0]["ours_tok_s"] / bound_tps
    )
    result.update(
        copy_bandwidth_gbs=bandwidth,
        copy_bandwidth_samples=bandwidths,
        greedy_bound_tokens_per_s=bound_tps,
    )
    print_table(
        f"SmolLM2-135M generate, batch 1, prompt {prompt_len} tokens, {args.runs} runs", rows
    )
    print(
        f"\nweights {weight_bytes / 1e6:.0f} MB ({params / 1e6:.1f} M f32 params, tied head once); "
        f"copy bandwidth {bandwidth:.1f} GB/s (best of {len(bandwidths)}) "
        f"-> greedy bound {bound_tps:.1f} tokens/s "
        f"({1e3 / bound_tps:.1f} ms/token)"
    )
    print(load_note())
    print_json("lm_generate", result, args.json)
    greedy, beam = result["greedy"], result["beam-4"]
    return check(
        {
            "greedy >= 2x transformers": greedy["speedup"] >= 2,
            "greedy >= 70% of bandwidth bound": greedy["pct_of_bound"] >= 70,
            "beam-4 >= 2x transformers": beam["speedup"] >= 2,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
