"""Where a SmolLM2 decode step's time goes (mats_jax only, no PyTorch).

Run:  .venv/bin/python benchmarks/decode_profile.py [--batch 1] [--reps 10] [--json PATH]

For one decode step at `--batch` rows (1 = greedy, 4 = beam-4), each part jitted on its own and
timed with interleaved repetitions (minimum and median, milliseconds):
- blocks:        the 30 decoder layers with a KV cache of 86 slots (`hidden_states`), the cache
                 not donated (its 60 buffers are copied: ~0.5 ms);
- head tied:     the LM head as the model computes it, `h @ embedding.T`;
- head [D, V]:   the same product with a pre-transposed [576, 49152] copy of the embedding;
- matvec chain:  the same 30 x 7 weight matrices (fresh random ones) multiplied in a chain with
                 no other op: what XLA's dot alone costs for streaming the block weights;
- loop overhead: per-token time of `generate` on a 30-layer model with tiny widths
                 (hidden 72, vocab 512): dispatch of the ~1000 thunks of a step, processors,
                 while-loop bookkeeping, with no weight traffic to speak of;
- copy:          numpy copy of the 538 MB of weights (read + write), for scale: reading them
                 once at that bandwidth takes half of this.
For a per-thunk breakdown, run any JAX program under `jax.profiler.trace(dir,
create_perfetto_trace=True)` with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true: every XLA thunk
(dot, fusion, ynn_fusion) then appears by its HLO name in the .json.gz trace.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import add_json_option, load_note, print_json, print_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10)
    add_json_option(parser)
    args = parser.parse_args(argv)
    from flax import nnx

    from mats_jax.convert.llm import load_llm, read_source
    from mats_jax.models.llama import Llama, LlamaConfig
    from mats_jax.models.sampler import GenerationConfig, generate
    from mats_jax.runtime.assets import smollm2_gguf_path

    b, slots, at = args.batch, 86, 40
    model = load_llm(smollm2_gguf_path())
    c = model.config
    d, f, kv = c.hidden_size, c.intermediate_size, c.num_key_value_heads * c.head_size
    cache = model.init_cache(b, slots)
    mask = jnp.ones((b, slots), bool)
    token, pos = jnp.full((b, 1), 100, jnp.int32), jnp.full((b, 1), at, jnp.int32)
    table = model.embed_tokens.embedding[...]
    table_t = jnp.asarray(np.asarray(table).T.copy())
    h = jax.random.normal(jax.random.key(0), (b, d))

    # the model goes in as a flat list of arrays: passing the NNX module itself costs ~6 ms of
    # Python pytree flattening per call, which `generate` pays once per call, not per token
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)

    @jax.jit
    def blocks(leaves, cache, t):
        m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        return m.hidden_states(t, attention_mask=mask, positions=pos, cache=cache, cache_index=at)

    head = jax.jit(lambda h, e: h @ e.T)
    head_t = jax.jit(lambda h, e: h @ e)
    keys = iter(jax.random.split(jax.random.key(1), 8 * c.num_hidden_layers))
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    weights = [
        [jax.random.normal(next(keys), s) * 0.02 for s in shapes]
        for _ in range(c.num_hidden_layers)
    ]

    @jax.jit
    def chain(x, weights):
        for q, k, v, o, g, u, dn in weights:
            x = (x @ q + jnp.tile(x @ k + x @ v, q.shape[1] // k.shape[1])) @ o
            x = ((x @ g) * (x @ u)) @ dn
        return x

    _, hf, _ = read_source(smollm2_gguf_path())
    tiny = Llama(
        LlamaConfig.from_hf(
            {**hf, "hidden_size": 72, "intermediate_size": 96, "vocab_size": 512, "head_dim": 8}
        ),
        rngs=nnx.Rngs(0),
    )
    n_new = 32
    config = GenerationConfig(
        max_new_tokens=n_new,
        min_length=22 + n_new,
        eos_token_id=2,
        num_beams=b,
        **({} if b == 1 else dict(no_repeat_ngram_size=2, repetition_penalty=2.0)),
    )
    prompt = np.ones((1, 22), np.int32)
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    src = np.ones(weight_bytes // 4, np.float32)
    dst = np.empty_like(src)

    parts = {
        "blocks (30 layers)": lambda: jax.block_until_ready(blocks(leaves, cache, token)),
        "head tied (h @ E.T)": lambda: jax.block_until_ready(head(h, table)),
        "head [D, V] (pre-transposed)": lambda: jax.block_until_ready(head_t(h, table_t)),
        "matvec chain (block weights)": lambda: jax.block_until_ready(chain(h, weights)),
        "loop overhead per token (tiny)": lambda: generate(tiny, tokens=prompt, config=config),
        "numpy copy of all weights": lambda: np.copyto(dst, src),
    }
    scale = {"loop overhead per token (tiny)": 1 / n_new}
    times = {k: [] for k in parts}
    for fn in parts.values():
        fn()
    for _ in range(args.reps):
        for name, fn in parts.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3 * scale.get(name, 1))
    rows = [
        {"part": k, "min_ms": min(t), "median_ms": float(np.median(t))} for k, t in times.items()
    ]
    copy_ms = min(times["numpy copy of all weights"])
    print_table(
        f"decode step, batch {b}, SmolLM2-135M ({weight_bytes / 1e6:.0f} MB f32 weights)", rows
    )
    print(
        f"\nbandwidth bound for one step: {copy_ms / 2:.1f} ms "
        f"(best copy {2 * weight_bytes / copy_ms / 1e6:.1f} GB/s read+write)"
    )
    print(load_note())
    print_json(
        "decode_profile",
        {
            "batch": b,
            "weight_bytes": weight_bytes,
            "bandwidth_bound_ms": copy_ms / 2,
            "rows": rows,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
