"""Prepare a corpus once: Records -> one array_record file per (source, split) + a JSON manifest.

    python -m mats_jax.data.prepare --sources audiocaps,clotho,audioset \\
        --data-root ../shared/data --out corpus/
    python -m mats_jax.data.prepare --jsonl train=audiotia.jsonl.gz --jsonl val=held_out.jsonl \\
        --out corpus/
    python -m mats_jax.data.prepare --default-corpus --out corpus/

Layout: ``OUT/manifest.json`` and ``OUT/<source>/<split>.array_record``, each record one
:class:`~mats_jax.data.records.Record` as UTF-8 JSON. Records are grouped by their own
``source`` field, so one user file holding many sources (AudioTIA has 23) yields one file per
source, and mixing ratios can be set per source. Files are written with ``group_size:1``, the
random-access layout TFDS also uses, which grain's ``ArrayRecordDataSource`` reads directly; we
write them ourselves instead of through a TFDS builder because that needs no builder class per
corpus and no TFDS metadata, and streams any number of rows in constant memory.

The output appears atomically: everything is written to a temporary sibling directory that is
renamed to ``OUT`` only when complete. An existing ``OUT`` is replaced only when it is a prepared
corpus and ``--overwrite`` is given; any other folder is refused, with or without it, before any
input is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import ml_collections
from array_record.python import array_record_module

from mats_jax.data import corpus
from mats_jax.data import descriptions as descriptions_lib
from mats_jax.data import sources as sources_lib
from mats_jax.data.records import FIELDS, MANIFEST, SCHEMA_VERSION
from mats_jax.data.rows import Rows, read_csv, read_jsonl
from mats_jax.runtime import distributed
from mats_jax.runtime.fileio import atomic_directory, check_directory

WRITER_OPTIONS = "group_size:1"
COMMAND = "data.prepare"  # the marker of the corpus folders `prepare` writes

log = logging.getLogger(__name__)


def prepare(
    out: str | Path, inputs: Sequence[tuple[str, Rows]], *, overwrite: bool = False
) -> dict:
    """Writes ``inputs`` (pairs of split name and Records) as a corpus at ``out``; returns its
    manifest.

    Raises FileExistsError (before reading any input) if ``out`` exists and is not empty, unless
    it is a prepared corpus and ``overwrite`` is true, and ValueError if no input yields a
    record.
    """
    out = Path(out)
    with atomic_directory(out, **_output(overwrite)) as tmp:
        manifest = _write(tmp, inputs)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_out(out: str | Path, *, overwrite: bool = False) -> None:
    """Raises FileExistsError unless ``prepare`` may write ``out`` (see ``prepare``)."""
    check_directory(out, **_output(overwrite))


def is_prepared_corpus(folder: Path) -> bool:
    """Whether ``folder`` holds a corpus manifest (one prepared before outputs were marked)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == "array_record"


def _output(overwrite: bool) -> dict:
    return dict(command=COMMAND, overwrite=overwrite, recognise=is_prepared_corpus)


def _write(directory: Path, inputs: Sequence[tuple[str, Rows]]) -> dict:
    writers: dict[tuple[str, str], array_record_module.ArrayRecordWriter] = {}
    counts: dict[tuple[str, str], int] = {}
    report = []
    try:
        for split, rows in inputs:
            for record in rows:
                key = (record.source, split)
                if key not in writers:
                    (directory / record.source).mkdir(exist_ok=True)
                    path = str(directory / _relpath(*key))
                    writers[key] = array_record_module.ArrayRecordWriter(path, WRITER_OPTIONS)
                    counts[key] = 0
                writers[key].write(record.to_json().encode("utf-8"))
                counts[key] += 1
            tally = rows.tally
            report.append(
                {
                    "input": rows.name,
                    "split": split,
                    "malformed": tally.malformed,
                    "left_out": dict(tally.dropped),
                }
            )
    finally:
        for writer in writers.values():
            writer.close()
    if not counts:
        raise ValueError("no records: every input was empty or malformed")
    by_source: dict[str, dict[str, dict]] = {}
    for (source, split), count in sorted(counts.items()):
        by_source.setdefault(source, {})[split] = {"path": _relpath(source, split), "count": count}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "array_record",
        "encoding": "json",
        "fields": list(FIELDS),
        "sources": by_source,
        "inputs": report,
    }


def _relpath(source: str, split: str) -> str:
    return f"{source}/{split}.array_record"


def real_inputs(names: Sequence[str], data_root: str | Path) -> list[tuple[str, Rows]]:
    """Every split of each named real source (see :data:`mats_jax.data.sources.SOURCES`)."""
    unknown = [n for n in names if n not in sources_lib.SOURCES]
    if unknown:
        raise ValueError(
            f"unknown source(s) {', '.join(unknown)}; known: {', '.join(sources_lib.SOURCES)}"
        )
    return [
        (split, sources_lib.build(name, data_root, split))
        for name in names
        for split in sources_lib.SOURCES[name].splits
    ]


def user_input(spec: str, *, csv: bool = False) -> tuple[str, Rows]:
    """A user file given as ``[SPLIT=]PATH`` (split ``train`` if none is named)."""
    split, sep, path = spec.partition("=")
    if not sep:
        split, path = "train", spec
    return split, (read_csv(path) if csv else read_jsonl(path))


def default_corpus_inputs() -> list[tuple[str, Rows]]:
    """The splits of the small corpus shipped in :mod:`mats_jax.data.corpus` (what a fresh clone
    trains on).
    """
    return [(split, read_jsonl(path)) for split, path in corpus.FILES.items()]


def corpus_for_run(data: ml_collections.ConfigDict, workdir: Path) -> Path:
    """The prepared corpus folder of a run: `data.corpus` if given, else the shipped corpus,
    prepared once into the workdir (by process 0; the others wait for its manifest)."""
    if data.corpus:
        return Path(data.corpus)
    out = workdir / "corpus"
    with distributed.process_zero_first("corpus"):
        if not distributed.is_process_zero():
            distributed.wait_for_file(out / MANIFEST)
        elif not (out / MANIFEST).is_file():
            prepare(out, default_corpus_inputs(), overwrite=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.data.prepare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="corpus directory to create")
    known = ",".join(sources_lib.SOURCES)
    parser.add_argument("--sources", default="", help=f"comma-separated real sources ({known})")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("../shared/data"),
        help="root of the real data (has captions/)",
    )
    user = {"action": "append", "default": [], "metavar": "[SPLIT=]PATH"}
    parser.add_argument(
        "--jsonl", **user, help="user JSONL (.gz ok) in the Record schema; repeatable"
    )
    parser.add_argument("--csv", **user, help="user CSV in the Record schema; repeatable")
    parser.add_argument(
        "--default-corpus",
        action="store_true",
        help="add the corpus shipped in mats_jax/data/corpus",
    )
    parser.add_argument(
        "--descriptions",
        type=Path,
        help="class descriptions (python -m mats_jax.data.describe) as the CLAP text of "
        "single-label classification records, instead of 'The sound of <label>.'",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it is a prepared corpus (any other folder is never replaced)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)

    if not (args.sources or args.jsonl or args.csv or args.default_corpus):
        parser.error("nothing to prepare: give --sources, --jsonl, --csv or --default-corpus")
    try:
        check_out(args.out, overwrite=args.overwrite)
        inputs = real_inputs([n for n in args.sources.split(",") if n], args.data_root)
        inputs += [user_input(spec) for spec in args.jsonl] + [
            user_input(spec, csv=True) for spec in args.csv
        ]
        if args.default_corpus:
            inputs += default_corpus_inputs()
        if args.descriptions:
            table = descriptions_lib.read_descriptions(args.descriptions)
            inputs = [(s, descriptions_lib.with_descriptions(r, table)) for s, r in inputs]
        manifest = prepare(args.out, inputs, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")
    for source, splits in manifest["sources"].items():
        log.info(
            "%s: %s",
            source,
            ", ".join(f"{split} {info['count']:,}" for split, info in splits.items()),
        )
    malformed = sum(i["malformed"] for i in manifest["inputs"])
    log.info("wrote %s (%d malformed row(s) skipped)", args.out, malformed)


if __name__ == "__main__":
    main()
