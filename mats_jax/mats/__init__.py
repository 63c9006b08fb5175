"""The MATS method itself: the bridge from a CLAP embedding into a frozen LLM, and Santa.

mapper.py   the trainable mapper (transformer or MLP) and projector
model.py    MATS: mapper + projector + LLM with LoRA; noise injection; the loss
prompt.py   the prompt layout ([BOS] USER: <Speech> prefix </Speech> tag instruction ...)
santa.py    Santa's k-means memory bank and batched retrieval
build.py    MATS from a run config, concretely or with shapes only
"""
