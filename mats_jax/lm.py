"""python -m mats_jax.lm: generate text with a converted LLM (the embedded SmolLM2 by default).

    python -m mats_jax.lm --prompt "The capital of France is"
    python -m mats_jax.lm --gguf model.gguf --prompt "Tell me a joke" --chat --num-beams 4
    python -m mats_jax.lm --checkpoint ckpt/ --prompt "..." --no-repeat-ngram-size 2 \\
        --repetition-penalty 2

--checkpoint takes a mats_jax checkpoint folder (python -m mats_jax.convert llm) or a Hugging Face
folder. The decode loop is compiled: the first call pays for compilation, later ones do not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from mats_jax.convert.llm import load_llm
from mats_jax.models.sampler import GenerationConfig, generate
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path
from mats_jax.runtime.cli import reports_input_errors
from mats_jax.runtime.errors import InputError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.lm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", type=Path, help="mats_jax checkpoint or Hugging Face folder"
    )
    source.add_argument("--gguf", type=Path, help="a GGUF file (dequantised to float32)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--do-sample", action="store_true")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    source = args.checkpoint or args.gguf or smollm2_gguf_path()
    model = load_llm(source)
    tokenizer = load_tokenizer(source)
    prompt = args.prompt
    if args.chat:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    ids = tokenizer(prompt, add_special_tokens=not args.chat, return_tensors="np").input_ids
    context = model.config.context_length
    if ids.shape[1] + args.max_new_tokens > context:
        raise InputError(
            f"prompt of {ids.shape[1]} tokens + {args.max_new_tokens} new tokens "
            f"exceeds the model's context of {context}"
        )
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        repetition_penalty=args.repetition_penalty,
        length_penalty=args.length_penalty,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    new = generate(model, tokens=ids, config=config, rng=jax.random.key(args.seed))
    return tokenizer.decode(np.asarray(new[0]), skip_special_tokens=True)


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    print(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
