"""MATS-LLaMA as in the paper: Vicuna-7B v1.5 (frozen, bf16, + [PAD]), LoRA r=8 α=32 on q/v,
MS-CLAP 2023, a 40-token transformer mapper (8 layers, 8 heads, dim 1024), noise σ²=0.015,
AdamW (0.9, 0.999), weight decay 0.05, peak LR 3e-5, 3000 warmup steps then cosine, batch 96,
360k iterations (docs/data_flow.md).

    python -m mats_jax.convert llm PATH/vicuna-7b-v1.5 ckpt/vicuna --add-pad-token "[PAD]"
    python -m mats_jax.convert clap --from msclap --source CLAP_weights_2023.pth --out ckpt/clap
    python -m mats_jax.data.prepare --sources audiocaps,clotho,audioset,esc50,... \
        --data-root DATA --out corpus/
    python -m mats_jax.train --config=configs/mats_llama.py --workdir=workdirs/mats_llama \
        --config.llm.checkpoint=ckpt/vicuna --config.clap.checkpoint=ckpt/clap \
        --config.data.corpus=corpus/

Expect: the paper reports ~70 A100-hours (2×A100, 35 h); on a pod the batch is sharded over
data×fsdp (launch/tpu_pod.sh mounts a bucket as the shared workdir). The full AudioTIA-5M corpus
is not public; the sources here are what can be rebuilt. LoRA dropout draws its masks from the
accelerator's own generator ("rbg"), not threefry, whose bit-mixing costs vector-unit time on TPU
for every [batch, positions, 4096] mask (it also halves the ahead-of-time compile).

Pods (checked ahead of time on any machine: `python -m mats_jax.aot --config=configs/mats_llama.py
--topology=v5p-8`): the default mesh, data parallel with the frozen weights replicated, fits a
v5p-8 (34 of 95 GiB per chip) and a v4-32 (19 of 32 GiB) and moves nothing but the trained
gradients. A v5e-16 (16 GiB chips) needs the weights split: `--config.mesh.data=8
--config.mesh.tensor=2` (13 GiB per chip).
"""

from mats_jax.config import base
from mats_jax.data.sources import PAPER_MIXTURE

# Vicuna-7B v1.5's Hugging Face config after `--add-pad-token "[PAD]"` (vocab 32001, pad 32000):
# what `python -m mats_jax.aot` compiles when no llm.checkpoint is given (a checkpoint's own
# config wins). The trainer always reads the checkpoint.
VICUNA_7B = dict(
    model_type="llama",
    vocab_size=32001,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=32000,
)


def get_config():
    c = base()
    c.llm.update(dtype="bfloat16", param_dtype="bfloat16", architecture=VICUNA_7B)
    c.data.update(sources=dict(PAPER_MIXTURE))
    # the text tower in train mode every step, as the original trains (dropout before the noise)
    c.clap.update(text_dropout=True)
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    # 16 packed rows of 512 positions hold about the paper's 96 examples a step (examples of
    # the real mixture take 65-111 positions; rows come out about 91% full)
    c.train.update(prng_impl="rbg", batch_size=16)
    return c
