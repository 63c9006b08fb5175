"""Converters between foreign checkpoint formats (HF, GGUF, PyTorch) and mats_jax."""
