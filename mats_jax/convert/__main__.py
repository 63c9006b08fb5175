"""python -m mats_jax.convert {llm,clap,mats} ...

llm SOURCE OUT [--add-pad-token TOKEN]
    SOURCE a Hugging Face folder or a .gguf file -> OUT a mats_jax checkpoint folder;
    SOURCE a mats_jax checkpoint folder -> OUT a Hugging Face folder (safetensors).
clap --from {msclap,hf} --source SOURCE --out DIR
    a CLAP checkpoint (msclap: CLAP_weights_2023.pth; hf: a transformers ClapModel folder, i.e.
    LAION-CLAP) -> OUT a mats_jax checkpoint folder (load it with
    mats_jax.convert.clap.load_clap).
mats --source SOURCE --out OUT [--config configs/mats_llama.py] [--llm DIR] [--clap DIR]
    an original MATS checkpoint (.pth, ckpt['model']) -> OUT a workdir that generate, evaluate and
    export read (the config gives the architecture; --llm/--clap its frozen parts), marked as an
    import (OUT/import.json): the trainer never resumes it, a new run starts from its weights
    with --config.train.init_from=OUT. `python -m mats_jax.export` goes back (original .pth or a
    PEFT adapter).

Each writes a new folder, under a temporary name renamed when complete. An existing OUT is
refused before any work, unless it is empty, or a previous output of the same subcommand and
--overwrite is given (a `convert mats` workdir that has been trained since is never replaced).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import ml_collections

from mats_jax.models import store
from mats_jax.runtime.cli import reports_input_errors
from mats_jax.runtime.fileio import MARKER, OutputExistsError, atomic_directory, check_directory


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    llm = commands.add_parser("llm", help="a decoder LLM (LLaMA family, GPT-2)")
    llm.add_argument("source", type=Path)
    llm.add_argument("out", type=Path)
    llm.add_argument(
        "--add-pad-token",
        metavar="TOKEN",
        help='add a pad token and grow the vocabulary (Vicuna for MATS: "[PAD]")',
    )
    llm.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format("llm"))
    clap = commands.add_parser("clap", help="a CLAP model (msclap 2023, LAION-CLAP)")
    clap.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=CLAP_FORMATS,
        help="format of --source (msclap: CLAP_weights_2023.pth; hf: a transformers "
        "ClapModel folder)",
    )
    clap.add_argument("--source", type=Path, required=True)
    clap.add_argument("--out", type=Path, required=True)
    clap.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format("clap"))
    mats = commands.add_parser("mats", help="an original MATS checkpoint (.pth) -> a workdir")
    mats.add_argument("--source", type=Path, required=True)
    mats.add_argument("--out", type=Path, required=True)
    mats.add_argument(
        "--config",
        type=Path,
        default=Path("configs/mats_llama.py"),
        help="the architecture of the imported checkpoint",
    )
    mats.add_argument("--llm", help="LLM checkpoint (overrides the config's llm.checkpoint)")
    mats.add_argument("--clap", help="CLAP checkpoint (overrides the config's clap.checkpoint)")
    mats.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format("mats"))
    args = parser.parse_args(argv)

    if args.command == "clap":
        from mats_jax.convert import clap as convert_clap  # heavy imports after argument errors

        convert_clap.IMPORTERS[args.source_format](
            args.source, args.out, command="convert clap", overwrite=args.overwrite
        )
        print(f"wrote mats_jax checkpoint {args.out}")
    elif args.command == "mats":
        from mats_jax.training import interchange
        from mats_jax.training.workdir import IMPORT_COMMAND

        check_workdir_out(args.out, overwrite=args.overwrite)
        config = load_config_file(args.config)
        if args.llm:
            config.llm.checkpoint = args.llm
        if args.clap:
            config.clap.checkpoint = args.clap
        with atomic_directory(args.out, command=IMPORT_COMMAND, overwrite=args.overwrite) as tmp:
            interchange.import_mats(args.source, config, tmp)
        print(
            f"wrote workdir {args.out}, an import: generate, evaluate and export read it; train "
            f"from it with --config.train.init_from={args.out} in a new --workdir"
        )
    elif store.is_model_folder(args.source):
        from mats_jax.convert import llm as convert_llm

        if args.add_pad_token:
            parser.error("--add-pad-token applies when importing, not exporting")
        convert_llm.export_llm(
            args.source, args.out, command="convert llm", overwrite=args.overwrite
        )
        print(f"wrote Hugging Face folder {args.out}")
    else:
        from mats_jax.convert import llm as convert_llm

        convert_llm.import_llm(
            args.source,
            args.out,
            add_pad_token=args.add_pad_token,
            command="convert llm",
            overwrite=args.overwrite,
        )
        print(f"wrote mats_jax checkpoint {args.out}")
    return 0


OVERWRITE_HELP = (
    "replace OUT if a previous `convert {}` wrote it (without it, an existing OUT that is not "
    "empty is refused; other folders are never replaced)"
)


def check_workdir_out(out: Path, *, overwrite: bool) -> None:
    """Raises OutputExistsError unless `convert mats` may write the workdir `out`: free, empty,
    or (with overwrite) a previous `convert mats` workdir that nothing has used since (a
    trainer, evaluate or memory_bank would have added files)."""
    from mats_jax.training import workdir as workdirs

    command = workdirs.IMPORT_COMMAND
    check_directory(out, command=command, overwrite=overwrite)
    # what `convert mats` (`import_mats`) puts in a workdir; anything else there came later
    writes = {workdirs.CONFIG_FILE, workdirs.CHECKPOINTS, workdirs.IMPORT_RECORD, MARKER}
    added = sorted(p.name for p in out.iterdir() if p.name not in writes) if out.is_dir() else []
    if added:
        raise OutputExistsError(
            f"{out} is a previous `{command}` workdir that has been used since (it now holds "
            f"{', '.join(added)}); choose another --out"
        )


# `--from` choices of the clap command; each names an importer in mats_jax.convert.clap.IMPORTERS
CLAP_FORMATS = ("msclap", "hf")


def load_config_file(path: Path) -> ml_collections.ConfigDict:
    """`get_config()` of a config file (configs/*.py), as `--config=` would load it."""
    spec = importlib.util.spec_from_file_location("mats_config", path)
    if spec is None or not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


if __name__ == "__main__":
    sys.exit(main())
