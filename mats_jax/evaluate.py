"""python -m mats_jax.evaluate: the paper's zero-shot benchmarks on a trained MATS.

    python -m mats_jax.evaluate --workdir=DIR --benchmark=esc50 --data=../shared/data/audio/esc50
    python -m mats_jax.evaluate --workdir=DIR --benchmark=clotho \\
        --data=clotho_captions_evaluation.csv --audio=clotho/evaluation/
    python -m mats_jax.evaluate --workdir=DIR --benchmark=fsd50k --data=FSD50K.ground_truth/ \\
        --audio=FSD50K.eval_audio/ --classes=class_labels_indices_fsd50k.csv
    python -m mats_jax.evaluate --workdir=DIR --benchmark=gtzan --data=genres/
    python -m mats_jax.evaluate --workdir=DIR --benchmark=mmau --data=mmau-test-mini.json \\
        --audio=test-mini-audios/

(the README's table lists every benchmark, the metadata it reads and its command). Generates
with the original eval configs' dataset tag, the paper's task prompt and beam search (Santa on
when the workdir has a memory bank), then scores:
  classification (esc50, us8k, tut17, vggsound, gtzan, bjo, vocalsound, ravdess, crema_d, sesa)
      accuracy of the nearest class name by CLAP text similarity, plus exact and substring
      matches; a confusion matrix;
  multi-label (fsd50k: mAP; dcase17: micro-F1)  classes ranked by CLAP text similarity (mAP),
      and the nearest class of each generated tag as the predicted set (micro F1/P/R);
  captioning (clotho, audiocaps, musiccaps)  BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr
      (coco-caption; Java needed; SPICE only with its Stanford jars in place);
  QA (clotho_aqa)  accuracy against the majority answer and against any annotator;
  multiple choice (mmau)  MMAU's answer matching, by task, category, sub-category, difficulty
      (test: answers withheld, so only mmau_predictions.json for MMAU's server);
  chat (airbench_chat)  no score here: its GPT-4 judge is not available; Chat_result_modelx.jsonl
      is written for AIR-Bench's score_chat.py.
Writes report.json, report.md, predictions.jsonl (and confusion.png) to --out (default
WORKDIR/eval/BENCHMARK-stepN): a new or empty folder, or with --overwrite a previous evaluation's
(checked before any work; anything else there is never touched). Clips without audio or that
cannot be read are listed and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mats_jax.runtime.cli import non_negative_int, positive_int, reports_input_errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from mats_jax.evaluation.benchmarks import BENCHMARKS, read_vocabulary

    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", type=Path, required=True, help="a training workdir")
    parser.add_argument(
        "--step", type=non_negative_int, help="checkpoint step (default: the latest)"
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the benchmark's metadata CSV, or a folder holding it",
    )
    parser.add_argument(
        "--audio", type=Path, help="folder searched for the clips (default: --data's folder)"
    )
    parser.add_argument(
        "--classes",
        type=Path,
        help="classification: the class list scored against (a class_labels_indices CSV, or "
        "FSD50K's vocabulary.csv; default: every label the metadata uses)",
    )
    parser.add_argument("--clap", help="CLAP checkpoint (default: the training config's)")
    parser.add_argument("--santa", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--limit", type=positive_int, help="score only the first N examples")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=200, help="the paper's is 200"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default: WORKDIR/eval/BENCHMARK-stepN)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it is a previous evaluation's output (other folders never are)",
    )
    args = parser.parse_args(argv)
    if args.classes is not None:
        args.classes = read_vocabulary(args.classes)
    return args


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np

    from mats_jax.clap.load import text_encoder
    from mats_jax.evaluation import benchmarks, report, scoring, submission
    from mats_jax.inference import process_shares
    from mats_jax.inference.listener import Listener

    if args.out:
        report.check_out(args.out, overwrite=args.overwrite)
    benchmark = benchmarks.BENCHMARKS[args.benchmark]
    metadata = benchmarks.metadata_file(benchmark, args.data)
    all_examples = benchmarks.read_examples(benchmark, metadata)
    examples = all_examples[: args.limit]
    classes = scoring.classes_for(benchmark.scoring, all_examples, args.classes)
    if benchmark.kind == "captioning":
        scoring.require_java()
    audio_root = args.audio or (args.data if args.data.is_dir() else metadata.parent)
    paths, missing = benchmarks.find_audio(benchmark, examples, audio_root)
    if not paths:
        raise benchmarks.BenchmarkError(
            f"{audio_root}: no audio for any of the {len(examples)} "
            f"{benchmark.name} examples of {metadata}"
        )
    shares = process_shares.join()  # each process of a pod takes its share of every batch
    listener = Listener.from_workdir(args.workdir, step=args.step, clap_checkpoint=args.clap)
    out = args.out or args.workdir / "eval" / f"{benchmark.name}-step{listener.step}"
    report.check_out(out, overwrite=args.overwrite)  # the default names the step just found
    skipped = {clip: f"no audio file for it under {audio_root}" for clip in missing}
    if listener.clap_checkpoint is None and shares.writes:
        print(f"warning: {report.RANDOM_CLAP_NOTE}", file=sys.stderr)

    clips = list(paths)
    embeddings, embedded, errors = process_shares.embed_audio(
        listener, [paths[c] for c in clips], batch_size=args.batch_size, shares=shares
    )
    by_file = dict(zip(embedded, embeddings))
    skipped |= {clip: errors[str(paths[clip])] for clip in clips if str(paths[clip]) in errors}
    scored = [e for e in examples if e.clip in paths and str(paths[e.clip]) in by_file]
    if not scored:
        raise benchmarks.BenchmarkError(
            f"none of the {len(examples)} {benchmark.name} clips could be read"
        )
    texts = process_shares.describe(
        listener,
        np.stack([by_file[str(paths[e.clip])] for e in scored]),
        batch_size=args.batch_size,
        shares=shares,
        question=[e.question for e in scored] if benchmark.kind == "qa" else None,
        progress=benchmark.name,
        task=benchmark.task,
        tag=benchmark.tag,
        santa=args.santa,
        generation=listener.paper_generation(max_new_tokens=args.max_new_tokens),
    )
    if not shares.writes:  # process 0 scores and writes for the run
        process_shares.wait_for_outputs()
        return 0

    embed, tokenize = text_encoder(listener.clap)

    def embed_texts(strings: list[str]) -> np.ndarray:
        return np.concatenate(
            [np.asarray(embed(tokenize(strings[i : i + 64]))) for i in range(0, len(strings), 64)]
        )

    metrics, unavailable, confusion = scoring.score(
        benchmark.scoring, texts, scored, embed_texts=embed_texts, classes=classes
    )

    summary = {
        "benchmark": benchmark.name,
        "workdir": str(args.workdir),
        "step": listener.step,
        "metadata": str(metadata),
        "audio": str(audio_root),
        "clap": listener.clap_checkpoint,
        "santa": bool(args.santa and listener.bank is not None),
        "examples": len(scored),
        "metrics": metrics,
        "unavailable": unavailable,
        "skipped": skipped,
        "note": report.RANDOM_CLAP_NOTE if listener.clap_checkpoint is None else "",
    }
    predictions = [
        {
            "clip": e.clip,
            "question": e.question,
            "prediction": text,
            "references": list(e.references),
        }
        for e, text in zip(scored, texts)
    ]
    report.write(
        out,
        summary,
        predictions,
        confusion,
        files=submission.files(benchmark.scoring, scored, texts),
        overwrite=args.overwrite,
    )
    process_shares.wait_for_outputs()  # the other processes end with the report written
    if missing:
        print(
            f"skipped {len(missing)} clips with no audio under {audio_root} "
            "(listed in report.json)",
            file=sys.stderr,
        )
    for reason in errors.values():
        print(f"skipped: {reason}", file=sys.stderr)
    print(report.markdown(summary))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
