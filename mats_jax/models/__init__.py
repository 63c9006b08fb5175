"""Flax NNX models: the decoder LLMs (LLaMA, GPT-2) and, later, CLAP and the MATS mapper."""
