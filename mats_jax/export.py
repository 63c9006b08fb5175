"""python -m mats_jax.export: a trained workdir back to PyTorch.

    python -m mats_jax.export --workdir=DIR --format=mats-torch --out=mats.pth
    python -m mats_jax.export --workdir=DIR --format=hf-peft --out=adapter/

mats-torch  the original MATS checkpoint layout (`{'model': state_dict}` of the trainable parts:
            mapper, projector, LoRA in peft naming), which the original code loads;
            `python -m mats_jax.convert mats` imports it again, bit for bit.
hf-peft     a PEFT LoRA adapter folder (`PeftModel.from_pretrained(base_llm, DIR)`), plus the mapper
            and projector in `mapper.safetensors` (original key names) and the training config.
Output is written under a temporary name and renamed when complete. It never replaces what
was there: an existing --out is refused before any work, unless --overwrite is given and it is
a file (mats-torch) or a previous hf-peft export (hf-peft; a workdir or any other folder never).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mats_jax.runtime.cli import non_negative_int, reports_input_errors


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", type=Path, required=True, help="a training workdir")
    parser.add_argument(
        "--step", type=non_negative_int, help="checkpoint step (default: the latest)"
    )
    parser.add_argument("--format", required=True, choices=("mats-torch", "hf-peft"))
    parser.add_argument(
        "--out", type=Path, required=True, help="the .pth file (mats-torch) or folder (hf-peft)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out .pth, or a folder that a previous hf-peft export wrote",
    )
    args = parser.parse_args(argv)

    from mats_jax.training.interchange import EXPORTERS

    EXPORTERS[args.format](args.workdir, args.out, step=args.step, overwrite=args.overwrite)
    print(f"wrote {args.format} {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
