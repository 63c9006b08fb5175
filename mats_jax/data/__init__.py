"""The text corpus of MATS: one Record type, builders from real data, preparation, and reading.

records.py   Record (text, task, instruction, answer, tag, source, clip) and the task vocabulary
rows.py      streaming readers: user JSONL/CSV; malformed rows logged as file:line and skipped
sources.py   one builder per real source in ../shared/data, evaluation clips kept out of train
prepare.py   Records -> array_record + manifest, once (python -m mats_jax.data.prepare)
pipeline.py  per-host shards, mixing ratios, shuffling, checkpointable iterator (grain)
corpus/      the small corpus that ships with the package
"""
