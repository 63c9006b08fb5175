"""MATS-GPT2: GPT-2 124M as the LLM (LoRA on its fused `c_attn`), MS-CLAP 2023, batch 128 examples
(22 packed rows),
peak LR 5e-5, 90k iterations (docs/data_flow.md); everything else as MATS-LLaMA.

    python -m mats_jax.convert llm PATH/gpt2 ckpt/gpt2
    python -m mats_jax.train --config=configs/mats_gpt2.py --workdir=workdirs/mats_gpt2 \
        --config.llm.checkpoint=ckpt/gpt2 --config.clap.checkpoint=ckpt/clap \
        --config.data.corpus=corpus/

Expect: a few GPU-days on one A100-class GPU; captioning quality below MATS-LLaMA (paper, Table 5).
"""

from mats_jax.config import base
from mats_jax.data.sources import PAPER_MIXTURE


def get_config():
    c = base()
    c.lora.update(targets=("c_attn",))
    c.data.update(sources=dict(PAPER_MIXTURE))
    # the text tower in train mode every step, as the original trains (dropout before the noise)
    c.clap.update(text_dropout=True)
    # 22 packed rows of 512 positions hold about the paper's 128 examples a step
    c.train.update(steps=90_000, batch_size=22, lr=5e-5)
    return c
