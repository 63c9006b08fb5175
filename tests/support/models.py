"""Tiny Hugging Face model folders (random weights, a real tokenizer) that load in seconds."""

import torch
import transformers

from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path


def tiny_llama_folder(path, dtype=torch.float32):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    transformers.LlamaForCausalLM(config).to(dtype).save_pretrained(path)
    load_tokenizer(smollm2_gguf_path()).save_pretrained(path)  # a real tokenizer with the folder
    return path
