"""python -m mats_jax.generate: describe, tag or answer questions about audio with a trained MATS.

    python -m mats_jax.generate --workdir=workdirs/default --audio clips/ --out captions.jsonl
    python -m mats_jax.generate --checkpoint=DIR/checkpoints/100 --audio dog.wav --task cla_label \
        --tag "[single event]"
    python -m mats_jax.generate --workdir=DIR --audio rain.wav --task QA --question "Is it raining?"

Prints `file<TAB>text` per file (and writes JSONL with --out), in batches, with the paper's
generation settings and post-processing. A file that cannot be read is reported on stderr and
skipped; the others still come out. When nothing comes out (no audio files, or none readable),
one line says so, the exit status is 1 and --out is not touched. An existing --out is replaced
only with --overwrite (checked before any work). Santa is on when the workdir has a memory bank.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mats_jax.data.records import COMMAND_LINE_TASKS
from mats_jax.runtime.cli import non_negative_int, positive_int, reports_input_errors
from mats_jax.runtime.errors import InputError
from mats_jax.runtime.fileio import atomic_file, check_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--workdir", type=Path, help="a training workdir (its latest checkpoint, or --step)"
    )
    model.add_argument("--checkpoint", type=Path, help="one checkpoint: WORKDIR/checkpoints/STEP")
    parser.add_argument(
        "--step", type=non_negative_int, help="checkpoint step (default: the latest)"
    )
    parser.add_argument(
        "--audio", type=Path, required=True, help="an audio file or a folder of them"
    )
    parser.add_argument("--task", default="caption", choices=tuple(COMMAND_LINE_TASKS.values()))
    parser.add_argument("--question", help="for --task QA")
    parser.add_argument(
        "--tag", default="", help='dataset tag after </Speech>, e.g. "[single event]"'
    )
    parser.add_argument("--santa", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--clap", help="CLAP checkpoint (default: the training config's)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--out", type=Path, help="also write JSONL here")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file (without it, it is never touched)",
    )
    return parser.parse_args(argv)


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mats_jax.clap.audio import SUPPORTED_SUFFIXES, audio_files
    from mats_jax.data.records import instruction_for
    from mats_jax.inference import process_shares
    from mats_jax.inference.listener import Listener

    instruction_for(args.task, args.question)
    untouched = f"; {args.out} not written" if args.out else ""
    files = audio_files(args.audio)
    if not files:
        raise InputError(
            f"{args.audio}: no audio files ({', '.join(SUPPORTED_SUFFIXES)}) in this folder"
            + untouched
        )
    if args.out:
        check_file(args.out, overwrite=args.overwrite)
    if args.checkpoint and args.step is not None:
        raise InputError("--step goes with --workdir; --checkpoint names its step")
    shares = process_shares.join()  # each process of a pod takes its share of every batch
    listener = (
        Listener.from_checkpoint(args.checkpoint, clap_checkpoint=args.clap)
        if args.checkpoint
        else Listener.from_workdir(args.workdir, step=args.step, clap_checkpoint=args.clap)
    )
    results = []
    for start in range(0, len(files), args.batch_size):
        embeddings, names, errors = process_shares.embed_audio(
            listener,
            files[start : start + args.batch_size],
            batch_size=args.batch_size,
            shares=shares,
        )
        for message in errors.values():
            if shares.writes:
                print(f"skipped: {message}", file=sys.stderr)
        if not names:
            continue
        texts = process_shares.describe(
            listener,
            embeddings,
            batch_size=args.batch_size,
            shares=shares,
            task=args.task,
            question=args.question,
            tag=args.tag,
            santa=args.santa,
        )
        for name, text in zip(names, texts):
            if shares.writes:
                print(f"{name}\t{text}", flush=True)
            results.append({"file": name, "task": args.task, "text": text})
    if not results:
        raise InputError(
            f"{args.audio}: none of the {len(files)} audio files could be read" + untouched
        )
    if args.out and shares.writes:  # process 0 writes for the run
        with atomic_file(args.out, overwrite=args.overwrite) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in results))
    process_shares.wait_for_outputs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
