"""python -m mats_jax.demo: listen to a clip in the browser with a trained MATS.

    python -m mats_jax.demo --workdir=workdirs/default          # then open http://127.0.0.1:7860
    python -m mats_jax.demo --checkpoint=DIR/checkpoints/100 --port=7865

Upload or record a clip, pick a task (or ask a question), Santa on or off: the page shows the
text `python -m mats_jax.generate` prints for that clip with those settings (the same Listener
calls), and what Santa did: the memory-bank cluster nearest the audio embedding and the training
texts it mixed in, with their weights. A file that is not audio gets a one-line error in the page.

Offline and on this host only: bound to 127.0.0.1 unless --host, no share link, no analytics,
fonts served locally. Uploads and recordings live in a temporary folder removed on exit; nothing
is copied anywhere else.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from mats_jax.data.records import COMMAND_LINE_TASKS
from mats_jax.runtime.cli import non_negative_int, positive_int, reports_input_errors
from mats_jax.runtime.errors import InputError

TASKS = tuple(COMMAND_LINE_TASKS.values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mats_jax.demo",
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
    parser.add_argument("--clap", help="CLAP checkpoint (default: the training config's)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: this host only)"
    )
    parser.add_argument("--port", type=positive_int, default=7860)
    return parser.parse_args(argv)


class Demo:
    """The page's one action, `listen`, over a Listener and its memory bank's texts."""

    def __init__(self, listener, bank_texts: list[str]):
        self.listener = listener
        self.bank_texts = bank_texts

    def listen(
        self, clip: str | None, task: str, question: str, tag: str, santa: bool
    ) -> tuple[str, str]:
        """(the answer, what Santa did in Markdown) for the uploaded or recorded `clip`, a path
        in the upload folder; bad input raises InputError with a line for the page."""
        from mats_jax.data.records import instruction_for

        if not clip:
            raise InputError("upload or record a clip first")
        question = question.strip() or None
        instruction_for(task, question)
        embeddings, _, errors = self.listener.embed_audio([clip])
        if errors:  # the upload folder's path means nothing to the person who sent the file
            raise InputError(errors[clip].replace(clip, Path(clip).name))
        santa = santa and self.listener.bank is not None
        [text] = self.listener.describe(
            embeddings, task=task, question=question, tag=tag.strip(), santa=santa
        )
        return text, self.santa_report(embeddings, santa)

    def santa_report(self, embeddings: np.ndarray, santa: bool) -> str:
        if self.listener.bank is None:
            return "No memory bank in this workdir (`python -m mats_jax.memory_bank` builds one)."
        if not santa:
            return "Santa is off: the audio embedding went to the mapper unchanged."
        clusters, rows, weights = self.listener.explain_santa(embeddings)
        cluster, counts = int(clusters[0]), np.asarray(self.listener.bank.counts)
        merged: dict[int, float] = {}  # a cluster smaller than top_l repeats its first member
        for row, weight in zip(rows[0].tolist(), weights[0].tolist()):
            merged[row] = merged.get(row, 0.0) + weight
        s = self.listener.santa
        lines = [
            f"Nearest cluster: **{cluster}** of {len(counts)} ({counts[cluster]} texts). "
            f"Mixed: {s.mix} × audio + {1 - s.mix:.2f} × the weighted texts "
            f"(variant {s.variant}, temperature {s.temperature}).",
            "",
            "| weight | memory text |",
            "| ---: | --- |",
        ]
        for row, weight in sorted(merged.items(), key=lambda item: -item[1]):
            text = self.bank_texts[row] if row < len(self.bank_texts) else f"bank row {row}"
            lines.append(f"| {weight:.3f} | {text.replace('|', '/')} |")
        return "\n".join(lines)


def build_page(demo: Demo):
    """The Gradio page: inputs on the left, answer and Santa's retrievals on the right."""
    import gradio as gr

    def listen(*inputs):
        try:
            return demo.listen(*inputs)
        except InputError as e:
            raise gr.Error(str(e), duration=None, print_exception=False) from None

    has_bank = demo.listener.bank is not None
    with gr.Blocks(title="MATS demo", analytics_enabled=False) as page:
        gr.Markdown(f"# MATS demo\nCheckpoint step {demo.listener.step}")
        with gr.Row():
            with gr.Column():
                clip = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Clip",
                    elem_id="clip",
                    buttons=["download"],  # no "share" (to a hub)
                )
                task = gr.Dropdown(list(TASKS), value="caption", label="Task", elem_id="task")
                question = gr.Textbox(label="Question (task QA)", elem_id="question")
                tag = gr.Textbox(label='Dataset tag, e.g. "[single event]"', elem_id="tag")
                santa = gr.Checkbox(
                    value=has_bank,
                    interactive=has_bank,
                    label="Santa" if has_bank else "Santa (no memory bank)",
                    elem_id="santa",
                )
                button = gr.Button("Listen", variant="primary", elem_id="listen")
            with gr.Column():
                answer = gr.Textbox(label="Answer", elem_id="answer", interactive=False)
                explained = gr.Markdown(elem_id="santa-report")
        button.click(
            listen, [clip, task, question, tag, santa], [answer, explained], api_name=False
        )
    return page


@reports_input_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.checkpoint and args.step is not None:
        raise InputError("--step goes with --workdir; --checkpoint names its step")
    from mats_jax.inference.listener import Listener
    from mats_jax.mats.santa import bank_texts
    from mats_jax.training.workdir import BANK_FOLDER

    listener = (
        Listener.from_checkpoint(args.checkpoint, clap_checkpoint=args.clap)
        if args.checkpoint
        else Listener.from_workdir(args.workdir, step=args.step, clap_checkpoint=args.clap)
    )
    workdir = args.checkpoint.parent.parent if args.checkpoint else args.workdir
    demo = Demo(listener, bank_texts(workdir / BANK_FOLDER))
    with tempfile.TemporaryDirectory(prefix="mats_demo_") as uploads:
        # read by Gradio at import: set first
        os.environ.update(GRADIO_TEMP_DIR=uploads, GRADIO_ANALYTICS_ENABLED="False")
        page = build_page(demo)
        try:
            page.launch(
                server_name=args.host,
                server_port=args.port,
                share=False,
                footer_links=[],
                run_history=False,  # its page offers to save runs to a hub
            )
        except KeyboardInterrupt:
            pass
        finally:
            page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
