"""The small default text corpus that ships with mats_jax, so the default config runs on a fresh
clone.

Only data whose licence allows redistribution, with attribution (``ATTRIBUTION.md``):
AudioCaps v1 captions (MIT) and AudioSet balanced-train labels turned into classification texts
(CC BY 4.0 labels / CC BY-SA 4.0 ontology names). ``train.jsonl`` holds 2,000 AudioCaps train
captions and 800 AudioSet label texts; ``val.jsonl`` holds all 5 captions of 100 AudioCaps
validation clips, for a validation loss on held-out captions. Records follow
:class:`mats_jax.data.records.Record`; ``python -m mats_jax.data.corpus.build`` regenerates the
files from ``../shared/data`` byte for byte.
"""

from pathlib import Path

DIRECTORY = Path(__file__).parent
FILES = {"train": DIRECTORY / "train.jsonl", "val": DIRECTORY / "val.jsonl"}
