"""CLAP (msclap 2023) audio and text towers, random weights: mats_jax vs msclap's PyTorch CLAP.

Run:  .venv/bin/python benchmarks/clap.py [--runs 3] [--batches 1,8] [--json PATH]

Both sides hold the same random weights: msclap's `CLAP` is built offline (torchaudio stubbed,
GPT-2 from a config, as in tests/references/msclap.py), its norms and relative-position
tables randomised, and ours is converted from its state dict with `from_msclap_state`.
- audio, batch 1 and 8 of 7 s clips (308,700 samples at 44.1 kHz, noise): waveform ->
  1024-d embedding. Ours: `embed_audio_fn(model)` (log-mel + HTSAT + projection, one jit).
  PyTorch: `clap.audio_encoder(wave)` (torchlibrosa front end + HTSAT + projection, which also
  computes msclap's unused AudioSet head) under `torch.inference_mode`, eval mode.
- text, 8 x 77 GPT-2 token ids (right-padded with id 0): ours `embed_text_fn(model)(ids)`;
  PyTorch `clap.caption_encoder({"input_ids", "attention_mask"})` (GPT-2 + pooling + projection).
Times are medians over `--runs` runs after one first call (`compile_s` = first - median: trace +
compile); the two sides' timed runs alternate, so load from other processes hits both alike.
PyTorch uses one intra-op thread per core.

FLOPs: counted once per workload with torch's `FlopCounterMode` on the PyTorch module (matmuls,
convolutions, batched matmuls; multiply-add = 2; no elementwise ops, no bicubic resize), and the
same count divides both sides' times, so GFLOP/s compare the two on the same work. The count XLA
gives for our lowered program (`jit(...).lower(...).cost_analysis()`, unoptimised HLO, elementwise
ops included) is printed beside it. Both sides' GFLOP/s are compared with their framework's
measured 2048^2 float32 matmul peak (benchmarks/common.py).

Target: ours >= 1.3x PyTorch on audio batch 8. Exits non-zero on an error or if the embeddings of
the two sides disagree (max abs diff > 1e-2: both compute the same function in float32).
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
from tests.references.msclap import msclap_reference  # noqa: E402  (the parity tests' reference)

NUM_SAMPLES = 308_700  # 7 s at 44.1 kHz
TEXT_LENGTH = 77
TOLERANCE = 1e-2


def torch_flops(torch, fn) -> float:
    """Matmul/conv FLOPs of one call of `fn` (torch.utils.flop_counter; multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def xla_flops(jitted, *args) -> float:
    """FLOPs XLA's cost analysis gives the lowered (unoptimised) program."""
    cost = jitted.lower(*args).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def caption_ids(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """GPT-2-like ids of `batch` captions of 10..77 tokens, right-padded with 0 (msclap's pad)."""
    rng = np.random.default_rng(7)
    ids = np.zeros((batch, TEXT_LENGTH), np.int64)
    mask = np.zeros((batch, TEXT_LENGTH), np.int64)
    for i, length in enumerate(np.linspace(10, TEXT_LENGTH, batch).astype(int)):
        ids[i, :length] = np.concatenate([rng.integers(1, 50000, length - 2), [220, 50256]])
        mask[i, :length] = 1
    return ids, mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", default="1,8", help="audio batch sizes, comma-separated")
    add_json_option(parser)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    torch = setup_torch()
    from flax import nnx

    from mats_jax.clap.model import _embed_audio, _embed_text, embed_audio_fn, embed_text_fn
    from mats_jax.convert.clap import from_msclap_state

    peak = matmul_peak_gflops()
    theirs = msclap_reference()
    ours = from_msclap_state(
        {k: v.detach().numpy() for k, v in theirs.state_dict().items()}, source="msclap (random)"
    )
    graphdef, state = nnx.split(ours)
    embed_audio, embed_text = embed_audio_fn(ours), embed_text_fn(ours)
    rows, diffs = [], {}

    # ---- audio tower ----------------------------------------------------------------------
    rng = np.random.default_rng(0)
    for batch in batches:
        wave_np = (0.1 * rng.standard_normal((batch, NUM_SAMPLES))).astype(np.float32)
        wave, wave_t = jnp.asarray(wave_np), torch.from_numpy(wave_np)

        def torch_audio():
            with torch.inference_mode():
                return theirs.audio_encoder(wave_t)[0]

        flops = torch_flops(torch, torch_audio)
        t_ours, t_torch = timed_pair(
            lambda: jax.block_until_ready(embed_audio(wave)), torch_audio, args.runs
        )
        diff = float(np.abs(np.asarray(embed_audio(wave)[0]) - torch_audio().numpy()).max())
        diffs[f"audio b{batch}"] = diff
        rows.append(
            _row(
                f"audio b{batch} (7 s clips)",
                flops,
                xla_flops(_embed_audio, graphdef, state, wave),
                t_ours,
                t_torch,
                peak,
            )
            | {"max_abs_diff": diff}
        )

    # ---- text tower -----------------------------------------------------------------------
    ids_np, mask_np = caption_ids(8)
    ids = jnp.asarray(ids_np, jnp.int32)
    text_in = {"input_ids": torch.from_numpy(ids_np), "attention_mask": torch.from_numpy(mask_np)}

    def torch_text():
        with torch.inference_mode():
            return theirs.caption_encoder(text_in)

    flops = torch_flops(torch, torch_text)
    t_ours, t_torch = timed_pair(
        lambda: jax.block_until_ready(embed_text(ids)), torch_text, args.runs
    )
    diff = float(np.abs(np.asarray(embed_text(ids)) - torch_text().numpy()).max())
    diffs["text 8x77"] = diff
    rows.append(
        _row(
            f"text 8x{TEXT_LENGTH} tokens",
            flops,
            xla_flops(_embed_text, graphdef, state, ids, None),
            t_ours,
            t_torch,
            peak,
        )
        | {"max_abs_diff": diff}
    )

    print_table(
        f"msclap 2023 CLAP towers, random weights, {args.runs} runs (matmul peak: JAX "
        f"{peak['jax']:.0f}, torch {peak['torch']:.0f} GFLOP/s)",
        rows,
    )
    print(
        "\ngflop = torch FlopCounterMode count (matmul/conv, used for both sides' GFLOP/s); "
        "xla_gflop = XLA cost analysis of our lowered program (elementwise included); "
        "max_abs_diff = |ours - PyTorch| over the 1024-d embeddings"
    )
    print(load_note())
    print_json("clap", {"peak_gflops": peak, "rows": rows}, args.json)
    bad = {k: v for k, v in diffs.items() if not np.isfinite(v) or v > TOLERANCE}
    if bad:
        print(
            f"error: ours and PyTorch disagree (max abs diff > {TOLERANCE}): {bad}", file=sys.stderr
        )
        return 2
    targets = {
        f"{r['what']} >= 1.3x PyTorch": r["speedup"] >= 1.3
        for r in rows
        if r["what"].startswith("audio b8")
    }
    return check(targets)


def _row(what, flops, xla, t_ours, t_torch, peak) -> dict:
    ours_gf, torch_gf = flops / t_ours.median_s / 1e9, flops / t_torch.median_s / 1e9
    return {
        "what": what,
        "ours_s": t_ours.median_s,
        "torch_s": t_torch.median_s,
        "speedup": t_torch.median_s / t_ours.median_s,
        "ours_compile_s": t_ours.compile_s,
        "torch_first_s": t_torch.first_s,
        "gflop": flops / 1e9,
        "xla_gflop": xla / 1e9,
        "ours_gflops": ours_gf,
        "torch_gflops": torch_gf,
        "ours_pct_peak": 100 * ours_gf / peak["jax"],
        "torch_pct_peak": 100 * torch_gf / peak["torch"],
        "ours_spread": t_ours.spread,
        "torch_spread": t_torch.spread,
    }


if __name__ == "__main__":
    sys.exit(main())
