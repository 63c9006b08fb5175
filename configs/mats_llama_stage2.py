"""MATS-LLaMA stage 2: a new run from stage 1's trained weights (configs/mats_llama.py), as the
original fine-tunes a trained model (its `model.ckpt`: the weights are loaded, then a new
optimiser and learning-rate schedule start, warmup included). Everything else is stage 1's.

    python -m mats_jax.train --config=configs/mats_llama_stage2.py \
        --workdir=workdirs/mats_llama_stage2 \
        --config.train.init_from=workdirs/mats_llama \
        --config.llm.checkpoint=ckpt/vicuna --config.clap.checkpoint=ckpt/clap \
        --config.data.corpus=corpus/

`train.init_from` takes a workdir (its newest checkpoint), one of its checkpoints
(`workdirs/mats_llama/checkpoints/360000`), or the released weights imported with
`python -m mats_jax.convert mats --source checkpoint.pth --out workdirs/released`.

Expect, first on stderr: "new run from workdirs/mats_llama/checkpoints/N: its trainable weights
(mapper, projector, LoRA), a fresh optimiser, step 0", the same in WORKDIR/run_start.json, and
metrics from step 1 with the learning rate warming up again from 0. Validation loss at step 0 is
stage 1's final one. A source of another model (mapper, LoRA or LLM sizes) is a one-line error
naming the key before any work.

The original's released config (audiofree_config_open.yaml, its output folder named stage 2)
lists the open-ended question-answering sets (`open_ended`, `music_aqa`, ratio 300 each) among
its sources, and sets peak LR 3e-5, 3000 warmup steps, weight decay 0.05 and noise variance
0.015, the values configs/mats_llama.py trains stage 1 with; its evaluation script reads a
stage-2 run named `stage2_model_noise_0.005_no_mb`, a variance we do not adopt without the paper
saying so.
"""

import importlib.util
from pathlib import Path


def _stage1():
    """configs/mats_llama.py, the config beside this one."""
    spec = importlib.util.spec_from_file_location(
        "mats_llama", Path(__file__).with_name("mats_llama.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _stage1()
    c.train.update(init_from="workdirs/mats_llama")
    return c
