"""Santa: batched retrieval and k-means in JAX vs the original per-sample algorithm in PyTorch.

Run:  .venv/bin/python benchmarks/santa.py [--runs 5] [--banks 5000,100000] [--kmeans-size 100000]
                                          [--member-batch auto,1,256] [--json PATH]

- retrieval: 256 CLAP-sized (1024-d) audio embeddings against banks of 5k and 100k L2-normalised
  text embeddings in K=100 clusters, top 32 members, noise, softmax(10·dot), 0.7/0.3 mix
  (DESIGN §2.5). Ours: `santa.retrieve_with_noise`, the whole batch in one jitted call. Reference:
  the original algorithm in PyTorch, structured as the original code runs it: nearest centres,
  noise, softmax and mixing batched; only the gather, distances and top-32 of each embedding's
  cluster in a Python loop. Both get the same noise; their outputs are compared.
  --member-batch lists the `member_batch` settings to time (auto: the backend's default).
- k-means: N×1024 (default 100k) to K=100, 10 Lloyd iterations from the same initial centres.
  Ours: `santa.kmeans` (jitted, one-hot matmul updates). Reference: the same iterations written
  with vectorised PyTorch ops (torch.cdist, index_add_).
Both sides run on the same kind of device: PyTorch on CUDA when JAX's backend is a GPU (as the
original code runs Santa), on the CPU otherwise; the device is printed in each row.
The bank is synthetic: 100 random directions plus noise, normalised (cluster sizes like a real
text bank's, no data needed). Times are medians over --runs after one first call (compile_s apart).
Target: retrieval faster than the original on both bank sizes (an earlier reference, per sample
throughout, overstated the speed-up).
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
    print_json,
    print_table,
    setup_torch,
    timed_pair,
)
from mats_jax.mats.santa import build_bank, default_member_batch, kmeans, retrieve_with_noise  # noqa: E402

DIM, CLUSTERS, TOP_L, AUDIO = 1024, 100, 32, 256
TEMPERATURE, MIX, VARIANCE, ITERATIONS = 10.0, 0.7, 0.015, 10


def synthetic_bank(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    points = directions[rng.integers(0, CLUSTERS, size)] + 0.8 * rng.standard_normal(
        (size, DIM)
    ).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def original_santa(torch, embeddings, centres, members, audio, noise):
    """DESIGN §2.5 structured as the original code runs it (`encode_audio` of
    MATS-LLaMA/models/audiofree_salmonn.py): nearest centres for the whole batch at once, then a
    Python loop over the embeddings for the gather, distances and top-k in each one's cluster,
    then noise, softmax and mixing batched. `members` lists each cluster's bank indices."""
    nearest_centres = torch.cdist(audio, centres).argmin(dim=1)
    picked = []
    for a, cluster in zip(audio, nearest_centres.tolist()):
        own = members[cluster]
        distances = torch.cdist(a[None], embeddings[own])[0]
        nearest = own[torch.topk(distances, min(TOP_L, len(own)), largest=False).indices]
        picked.append(torch.cat([nearest, own[:1].repeat(TOP_L - len(nearest))]))
    texts = torch.nn.functional.normalize(embeddings[torch.stack(picked)], dim=-1)
    texts = torch.nn.functional.normalize(texts + VARIANCE**0.5 * noise, dim=-1)
    weights = torch.softmax(TEMPERATURE * torch.einsum("nd,nkd->nk", audio, texts), dim=-1)
    return MIX * audio + (1 - MIX) * torch.einsum("nk,nkd->nd", weights, texts)


def torch_kmeans(torch, x, centres):
    for _ in range(ITERATIONS):
        labels = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=len(centres)).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres, torch.cdist(x, centres).argmin(1)


def torch_device(torch) -> str:
    """The reference's device: CUDA when JAX runs on a GPU, so both sides use the same hardware."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def synchronised(torch, device: str, fn):
    """`fn` followed by waiting for the device (CUDA calls return before the work is done)."""

    def run():
        with torch.inference_mode():
            result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    return run


def retrieval_rows(torch, size: int, runs: int, member_batches: list[int | None]) -> list[dict]:
    bank = build_bank(synthetic_bank(size), CLUSTERS, ITERATIONS, jax.random.key(0))
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((AUDIO, DIM)).astype(np.float32) * 0.05 + np.asarray(
        bank.embeddings[:AUDIO]
    )
    noise = rng.standard_normal((AUDIO, TOP_L, DIM)).astype(np.float32)
    audio_j, noise_j = jnp.asarray(audio), jnp.asarray(noise)
    device = torch_device(torch)
    members = [
        torch.from_numpy(np.array(row[:count])).to(device)
        for row, count in zip(bank.members, bank.counts)
    ]
    t_embeddings, t_centres, t_audio, t_noise = (
        torch.from_numpy(np.array(x)).to(device)
        for x in (bank.embeddings, bank.centres, audio, noise)
    )
    reference = synchronised(
        torch,
        device,
        lambda: original_santa(torch, t_embeddings, t_centres, members, t_audio, t_noise),
    )
    rows = []
    for member_batch in member_batches:

        def ours():
            return jax.block_until_ready(
                retrieve_with_noise(
                    bank,
                    audio_j,
                    noise_j,
                    temperature=TEMPERATURE,
                    mix=MIX,
                    noise_variance=VARIANCE,
                    member_batch=member_batch,
                )
            )

        t_ours, t_ref = timed_pair(ours, reference, runs)
        error = float(np.abs(np.asarray(ours()) - reference().cpu().numpy()).max())
        rows.append(
            {
                "bank": size,
                "device": f"{jax.devices()[0].device_kind} / torch {device}",
                "member_batch": f"auto ({default_member_batch(AUDIO)})"
                if member_batch is None
                else member_batch,
                "ours_ms": t_ours.median_s * 1e3,
                "original_ms": t_ref.median_s * 1e3,
                "speedup": t_ref.median_s / t_ours.median_s,
                "compile_s": t_ours.compile_s,
                "max_abs_diff": error,
            }
        )
    return rows


def kmeans_row(torch, size: int, runs: int) -> dict:
    x = synthetic_bank(size, seed=2)
    device = torch_device(torch)
    x_j, t_x = jnp.asarray(x), torch.from_numpy(x).to(device)
    key = jax.random.key(0)
    # ours draws its initial centres from `key`; give the reference the same ones
    init = np.asarray(jax.random.choice(key, size, (CLUSTERS,), replace=False))
    t_init = t_x[torch.from_numpy(init.copy()).to(device)]

    def ours():
        return jax.block_until_ready(kmeans(x_j, CLUSTERS, ITERATIONS, key))

    reference = synchronised(torch, device, lambda: torch_kmeans(torch, t_x, t_init))
    t_ours, t_ref = timed_pair(ours, reference, runs)
    agree = float(np.mean(np.asarray(ours()[1]) == reference()[1].cpu().numpy()))
    return {
        "points": size,
        "device": f"{jax.devices()[0].device_kind} / torch {device}",
        "ours_s": t_ours.median_s,
        "torch_s": t_ref.median_s,
        "speedup": t_ref.median_s / t_ours.median_s,
        "compile_s": t_ours.compile_s,
        "same_assignment": agree,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--banks", default="5000,100000")
    parser.add_argument("--kmeans-size", type=int, default=100_000)
    parser.add_argument(
        "--member-batch",
        default="auto",
        help="comma-separated member_batch settings to time; auto = the backend's default",
    )
    add_json_option(parser)
    args = parser.parse_args()
    member_batches = [None if b == "auto" else int(b) for b in args.member_batch.split(",")]
    torch = setup_torch()
    retrieval = [
        row
        for size in args.banks.split(",")
        for row in retrieval_rows(torch, int(size), args.runs, member_batches)
    ]
    print_table(
        f"Santa retrieval, {AUDIO} audio embeddings, top {TOP_L} "
        "(PyTorch original: batched, its loop only per embedding's cluster)",
        retrieval,
    )
    clustering = [kmeans_row(torch, args.kmeans_size, max(args.runs // 2, 1))]
    print_table(
        f"k-means {args.kmeans_size}x{DIM} -> K={CLUSTERS}, {ITERATIONS} iterations", clustering
    )
    print(load_note())
    print_json("santa", {"retrieval": retrieval, "kmeans": clustering}, args.json)
    if any(row["max_abs_diff"] > 1e-4 for row in retrieval):
        print("ERROR: ours and the original disagree", file=sys.stderr)
        return 1
    return check(
        {
            (
                f"retrieval faster than the original, bank {row['bank']}, "
                f"member_batch {row['member_batch']}"
            ): row["speedup"] > 1
            for row in retrieval
        }
    )


if __name__ == "__main__":
    sys.exit(main())
