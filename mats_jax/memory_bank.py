"""Build Santa's memory bank:
`python -m mats_jax.memory_bank --config=configs/default.py --workdir=DIR`.

Picks `santa.bank_size` texts (seeded, uniformly among the unique texts) from the train split of
the sources the config trains on, looks up their CLAP text embeddings in the corpus's cached table
(built exactly as the trainer builds it when missing, so the two share one cache), L2-normalises
them, runs k-means (`santa.clusters`, `santa.iterations`) and saves the bank to DIR/memory_bank/,
replacing a bank built before (a DIR/memory_bank that is not a bank is refused before any work).
The bank must come from the same CLAP weights as the audio embeddings it will meet, which the
cache name (`mats_jax.clap.load.cache_name`) guarantees.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from mats_jax.clap import text_cache
from mats_jax.clap.load import cache_name
from mats_jax.config import check_paths, check_values
from mats_jax.data import pipeline
from mats_jax.data.prepare import corpus_for_run
from mats_jax.mats.santa import build_bank, check_bank_folder
from mats_jax.runtime import cli, distributed
from mats_jax.runtime.errors import InputError
from mats_jax.runtime.sharding import make_mesh
from mats_jax.training.workdir import BANK_FOLDER


class BankError(InputError):
    """Bad input for the bank, reported as one line before any clustering."""


def training_texts(corpus_dir: Path, manifest: dict, sources: dict[str, float]) -> list[str]:
    """The unique texts (sorted) of the train split of each source with a positive weight."""
    texts = set()
    for name in sorted(s for s, weight in sources.items() if weight > 0):
        entry = manifest["sources"].get(name, {}).get("train")
        if entry is None:
            raise BankError(f"{corpus_dir} has no {name}/train split")
        texts.update(
            r.text
            for r in pipeline.first_records(
                corpus_dir, source=name, split="train", count=entry["count"]
            )
        )
    return sorted(texts)


def build(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """Builds the bank into WORKDIR/memory_bank and returns that folder."""
    check_values(config)
    check_paths(config, ("clap.checkpoint", "data.corpus"))
    s = config.santa.to_dict()
    out = workdir / BANK_FOLDER
    check_bank_folder(out, overwrite=True)  # a bank built before is replaced, nothing else
    workdir.mkdir(parents=True, exist_ok=True)
    corpus_dir = corpus_for_run(config.data, workdir)
    try:
        manifest = pipeline.load_manifest(corpus_dir)
    except (FileNotFoundError, ValueError) as e:
        raise BankError(str(e)) from None

    texts = training_texts(corpus_dir, manifest, dict(config.data.sources))
    size = min(s["bank_size"], len(texts))
    if not 0 < s["clusters"] <= size:
        raise BankError(f"santa.clusters {s['clusters']} must be in [1, {size}] (the bank's size)")
    chosen = [
        texts[i]
        for i in np.sort(np.random.default_rng(s["seed"]).choice(len(texts), size, replace=False))
    ]
    logging.info("memory bank: %d of %d unique training texts of %s", size, len(texts), corpus_dir)

    # the trainer's table (all splits), so both share one cache and CLAP runs only if it is missing
    all_texts = (record.text for record in pipeline.all_records(corpus_dir, manifest))
    table = text_cache.for_corpus(
        corpus_dir,
        all_texts,
        checkpoint=config.clap.checkpoint,
        seed=config.clap.seed,
        mesh=make_mesh(config.mesh),
    )
    try:
        embeddings = table.lookup(chosen)
    except KeyError as e:
        raise BankError(f"{e.args[0]}; the cached table is stale, delete it to rebuild") from None
    start = time.perf_counter()
    bank = build_bank(embeddings, s["clusters"], s["iterations"], jax.random.key(s["seed"]))
    counts = np.asarray(bank.counts)
    logging.info(
        "k-means: %d clusters, %d iterations in %.2f s (compilation included); "
        "cluster sizes %d..%d, %d empty",
        s["clusters"],
        s["iterations"],
        time.perf_counter() - start,
        counts.min(),
        counts.max(),
        int((counts == 0).sum()),
    )
    if distributed.is_process_zero():  # every process computed the same bank; one writes it
        bank.save(
            out,
            {
                "texts": chosen,
                "clap": cache_name(config.clap.checkpoint, config.clap.seed),
                "corpus": str(corpus_dir),
                "santa": s,
            },
            overwrite=True,
        )
        logging.info("saved the memory bank to %s", out)
    distributed.barrier("memory bank saved")
    return out


if __name__ == "__main__":
    cli.run(build)
