"""The fields every MATS config has, with the paper's values where it gives them (DESIGN §2.4).

Each config in configs/ starts from `base()` and changes what its run needs.
"""

import ml_collections

from mats_jax.sharding import DEFAULT_RULES


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.llm = dict(checkpoint="", dtype="float32", param_dtype="float32")  # "": embedded SmolLM2
    c.clap = dict(checkpoint="", seed=0, dim=1024)  # "": random CLAP weights (said loudly)
    c.mapper = dict(mapping_type="transformer", dim=1024, prefix_length=40, clip_length=40,
                    num_layers=8, num_heads=8, mlp_ratio=2.0)
    c.lora = dict(rank=8, alpha=32.0, dropout=0.1, targets=("q_proj", "v_proj"))
    c.noise_variance = 0.015
    c.data = dict(corpus="", sources={"audiocaps": 1.0}, val_source="audiocaps", seed=0,
                  tail_length=200, max_answer_tokens=150)
    c.train = dict(steps=360_000, batch_size=96, grad_accum=1, lr=3e-5, warmup_steps=3000,
                   weight_decay=0.05, b1=0.9, b2=0.999, seed=0, remat=False, log_every=50,
                   checkpoint_every=5000, keep_checkpoints=3, peak_flops_per_device=0.0,
                   prng_impl="threefry2x32",  # "rbg": the accelerator's own generator (cheap dropout)
                   profile_start=10, profile_steps=0)  # steps > 0: a profiler trace in WORKDIR/tensorboard
    c.eval = dict(every=5000, batches=10, batch_size=16, samples=4, max_new_tokens=40)
    c.santa = dict(bank_size=5000, clusters=100, iterations=10, seed=0, top_l=32, temperature=10.0,
                   mix=0.7, variant="original")  # "paper": the normalised variant of the paper's formula
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = tuple(DEFAULT_RULES)
    return c
