"""Foreign checkpoint formats in and out: Hugging Face folders, GGUF, PyTorch .pth.

keymap.py    rename/transform rules between PyTorch and Flax parameter names, both ways
hf_io.py     Hugging Face folders (config.json + safetensors or .bin, sharded or not)
gguf_io.py   GGUF files, dequantised
llm.py       decoder LLMs (LLaMA family, GPT-2)
clap.py      msclap 2023 .pth and transformers ClapModel (LAION-CLAP) folders
mats.py      the original MATS checkpoint's key map and file layouts
__main__.py  python -m mats_jax.convert
"""
