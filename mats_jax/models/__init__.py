"""Generic decoder LMs in Flax NNX and what every LM needs around it.

layers.py     Linear (optional LoRA), norms, attention, KV cache
decoder.py    the interface every decoder LM implements; llama.py, gpt2.py implement it
lora.py       adding and merging LoRA adapters
registry.py   model families by the name that model folders and configs carry
params.py     flat {"a.b.c": array} views of a model; the one key/shape check
store.py      a converted model as a folder (mats_jax.json + orbax params + tokenizer)
tokenizer.py  tokenizers from local files only
sampler.py    greedy, sampling and beam search with a compiled decode loop
losses.py     the one next-token cross-entropy
"""
