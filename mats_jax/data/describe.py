"""Write N descriptions per class for label sources (the original's GPT-4 class descriptions).

    python -m mats_jax.data.describe --labels ../shared/data/captions/label_vocabularies/\\
        esc_class_labels_indices.csv --out esc_descriptions.jsonl --per-class 5 --seed 0

Labels the AudioSet ontology describes (by name or mid; `--ontology`, on by default) get its
human-written description once; the rest get `--per-class` sampled one-sentence answers of a
local LLM (`--llm`, the embedded SmolLM2 by default) to a chat prompt. The same seed gives the
same file. Output: JSONL (see mats_jax.data.descriptions), written atomically; an existing file
is refused without --overwrite. Labels whose generations were all empty are listed and the
command exits 1 without writing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from mats_jax.convert.llm import load_llm
from mats_jax.data import descriptions as D
from mats_jax.models.sampler import GenerationConfig, generate
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path
from mats_jax.runtime.cli import reports_input_errors
from mats_jax.runtime.errors import InputError
from mats_jax.runtime.fileio import atomic_file, check_file

ONTOLOGY = Path("../shared/data/captions/audioset/ontology.json")
PROMPT = "In one sentence, describe what the sound of {label} sounds like."


def llm_descriptions(
    labels: Sequence[str], llm: str | Path, *, per_class: int, seed: int, max_new_tokens: int = 40
) -> dict[str, list[str]]:
    """label -> `per_class` cleaned sampled descriptions (empty strings kept, for the report)."""
    tokenizer, model = load_tokenizer(llm), load_llm(llm)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT.format(label=label)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for label in labels
    ]
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    width = max(len(ids) for ids in encoded)  # one prompt shape: one compiled decode
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    fill = config.fill_token
    out = {}
    for index, (label, ids) in enumerate(zip(labels, encoded, strict=True)):
        tokens = np.full((per_class, width), fill, np.int32)
        tokens[:, width - len(ids) :] = ids
        mask = np.zeros((per_class, width), bool)
        mask[:, width - len(ids) :] = True
        rng = jax.random.fold_in(jax.random.key(seed), index)
        new = generate(model, tokens=tokens, attention_mask=mask, config=config, rng=rng)
        out[label] = [D.clean(tokenizer.decode(row, skip_special_tokens=True)) for row in new]
    return out


def describe(
    pairs: Sequence[tuple[str, str]],
    *,
    llm: str | Path,
    ontology: D.Ontology | None,
    per_class: int,
    seed: int,
) -> list[dict[str, str]]:
    """The rows of a descriptions file; InputError naming labels with only empty generations."""
    known = {label: ontology.lookup(label, mid) for label, mid in pairs} if ontology else {}
    rest = [label for label, _ in pairs if not known.get(label)]
    generated = llm_descriptions(rest, llm, per_class=per_class, seed=seed) if rest else {}
    empty = [label for label, texts in generated.items() if not any(texts)]
    if empty:
        raise InputError(f"no description generated for label(s): {', '.join(empty)}")
    rows = []
    for label, _ in pairs:
        if known.get(label):
            rows.append(D.annotation(label, known[label], D.ONTOLOGY))
        else:
            rows += [D.annotation(label, t, D.LLM) for t in generated[label] if t]
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.data.describe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--labels", required=True, type=Path, help="label .txt or .csv")
    parser.add_argument("--out", required=True, type=Path, help="descriptions JSONL to write")
    parser.add_argument("--per-class", type=int, default=5, help="LLM descriptions per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm", type=Path, default=None, help="GGUF, HF folder or checkpoint")
    parser.add_argument("--ontology", type=Path, default=ONTOLOGY, help="AudioSet ontology")
    parser.add_argument("--no-ontology", action="store_true", help="the LLM for every label")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error("--per-class must be positive")
    return args


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_file(args.out, overwrite=args.overwrite)
    pairs = D.read_labels(args.labels)
    ontology = None if args.no_ontology else D.Ontology(args.ontology)
    rows = describe(
        pairs,
        llm=args.llm or smollm2_gguf_path(),
        ontology=ontology,
        per_class=args.per_class,
        seed=args.seed,
    )
    with atomic_file(args.out, overwrite=args.overwrite) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    origins = [r["origin"] for r in rows]
    print(
        f"wrote {args.out}: {len(rows)} description(s) of {len(pairs)} label(s) "
        f"({origins.count(D.ONTOLOGY)} from the ontology, {origins.count(D.LLM)} from the LLM)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
