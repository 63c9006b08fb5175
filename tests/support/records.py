"""Synthetic caption records of three sources: small corpora whose texts name their records."""

from mats_jax.data.records import caption

# Synthetic corpus: source -> (train records, val records). Texts are unique, so a text names a
# record.
SIZES = {"alpha": (600, 40), "beta": (300, 20), "gamma": (150, 10)}


def synthetic_records(source: str, split: str, n: int) -> list:
    return [
        caption(f"{source} {split} {i}", dataset=source, source=source, clip=f"{source}:{i}")
        for i in range(n)
    ]
