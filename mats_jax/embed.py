"""python -m mats_jax.embed: CLAP embeddings of audio files or captions, as .npy.

    python -m mats_jax.embed --clap ckpt/clap --audio clips/ --out clips.npy
    python -m mats_jax.embed --clap ckpt/clap --text captions.txt --out captions.npy

Writes OUT (float32 [N, dim], as the encoder returns them: not normalised) and OUT's `.json`
sidecar naming each row (file or caption) and each file that could not be read. A bad file is
reported and skipped; the others are still embedded; when none is left, nothing is written and
the exit status is 1. An existing OUT or sidecar is replaced only with --overwrite (checked
before any work). Without --clap, CLAP weights are random (a loud warning says so). Audio is
loaded as msclap does (see `mats_jax.clap.audio`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mats_jax.runtime.cli import positive_int, reports_input_errors
from mats_jax.runtime.errors import InputError
from mats_jax.runtime.fileio import atomic_file, check_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.embed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clap", type=Path, help="a converted CLAP checkpoint folder")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--audio", type=Path, help="an audio file or a folder of them")
    what.add_argument("--text", type=Path, help="a text file, one caption per line")
    parser.add_argument(
        "--out", type=Path, required=True, help="output .npy (and its .json sidecar beside it)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT and its .json sidecar (without it they are never touched)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument(
        "--crop",
        choices=("center", "random"),
        default="center",
        help="how clips longer than the model's duration are cut",
    )
    parser.add_argument("--seed", type=int, default=0, help="for --crop random")
    return parser.parse_args(argv)


def embed_audio(model, paths: list[Path], args) -> tuple[np.ndarray, list[str], dict[str, str]]:
    from mats_jax.clap.batches import embed_audio_files

    return embed_audio_files(
        model,
        paths,
        batch_size=args.batch_size,
        crop=args.crop,
        rng=args.seed,
        to_devices=on_all_devices(model),
        progress=True,
    )


def embed_text(model, captions: list[str], args) -> tuple[np.ndarray, list[str], dict[str, str]]:
    from mats_jax.clap.caption_tokens import msclap_tokenize
    from mats_jax.clap.model import embed_text_fn

    to_devices = on_all_devices(model)
    embed = embed_text_fn(model)
    rows = []
    for start in tqdm(range(0, len(captions), args.batch_size), desc="text", unit="batch"):
        ids, _ = msclap_tokenize(captions[start : start + args.batch_size], truncate=True)
        rows.append(np.asarray(embed(to_devices(ids)))[: len(ids)])
    return np.concatenate(rows).astype(np.float32), captions, {}


def on_all_devices(model):
    """Replicates `model` on all of this process's devices and returns the function that splits
    a batch over them (padded to a multiple of their number; see `mats_jax.runtime.sharding`)."""
    from mats_jax.runtime.sharding import data_parallel_mesh, replicate, split_rows

    mesh = data_parallel_mesh()
    replicate(mesh, model)
    return lambda rows: split_rows(mesh, rows)


def sidecar(out: Path) -> Path:
    return out.with_suffix(".json")


def check_outputs(out: Path, *, overwrite: bool = False) -> None:
    """Refuses (before any work) an OUT that cannot be written: a folder, the sidecar's own name,
    or an existing file without `overwrite`."""
    if out.suffix.lower() == ".json":
        raise InputError(f"{out}: --out ends in .json, the name of its sidecar; use .npy")
    check_file(out, overwrite=overwrite)
    check_file(sidecar(out), overwrite=overwrite)


def save(
    out: Path,
    table: np.ndarray,
    names: list[str],
    errors: dict[str, str],
    *,
    overwrite: bool = False,
) -> None:
    """Write OUT and OUT.json atomically (temporary names, then rename); existing ones are
    replaced only with `overwrite`."""
    with (
        atomic_file(out, overwrite=overwrite) as tmp,
        atomic_file(sidecar(out), overwrite=overwrite) as tmp_sidecar,
    ):
        with open(tmp, "wb") as f:  # a file object: np.save adds no ".npy" to the name
            np.save(f, table)
        tmp_sidecar.write_text(json.dumps({"rows": names, "errors": errors}, indent=1))


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mats_jax.clap.audio import SUPPORTED_SUFFIXES, audio_files
    from mats_jax.clap.load import load_clap_or_random

    if args.audio is not None:
        inputs = audio_files(args.audio)
        if not inputs:
            raise InputError(
                f"{args.audio}: no audio files ({', '.join(SUPPORTED_SUFFIXES)}) in this folder; "
                f"nothing written to {args.out}"
            )
    else:
        if not args.text.is_file():
            raise FileNotFoundError(f"{args.text}: no such file")
        inputs = [line.strip() for line in args.text.read_text().splitlines() if line.strip()]
        if not inputs:
            raise InputError(f"{args.text}: no captions; nothing written to {args.out}")
    check_outputs(args.out, overwrite=args.overwrite)
    model = load_clap_or_random(args.clap)
    table, names, errors = (embed_audio if args.audio is not None else embed_text)(
        model, inputs, args
    )
    for message in errors.values():
        print(f"skipped: {message}", file=sys.stderr)
    if not names:
        raise InputError(
            f"{args.audio}: none of the {len(inputs)} audio files could be read; "
            f"nothing written to {args.out}"
        )
    save(args.out, table, names, errors, overwrite=args.overwrite)
    print(f"wrote {len(names)} embeddings to {args.out} ({len(errors)} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
