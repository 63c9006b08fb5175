"""Where training numbers go: TensorBoard, a metrics.jsonl beside it, a progress bar, and on
request a profiler trace of a few steps.

Only process 0 writes (every process computes the same global metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
from tqdm import tqdm

from mats_jax.runtime.fileio import atomic_file


class MetricsWriter:
    """A restarted run continues the logs of the run it resumes: lines and events past the
    checkpoint it starts from (logged by the run that died before saving again) are dropped,
    so every step appears once."""

    def __init__(self, workdir: Path, *, total_steps: int, initial_step: int):
        self.active = jax.process_index() == 0
        self.progress = tqdm(
            total=total_steps,
            initial=initial_step,
            unit="step",
            dynamic_ncols=True,
            disable=not self.active,
        )
        if self.active:
            from tensorboardX import SummaryWriter  # imported here: only process 0 writes

            # purge_step: TensorBoard hides the earlier run's events from this step on
            self.tensorboard = SummaryWriter(
                str(workdir / "tensorboard"), purge_step=initial_step + 1
            )
            path = workdir / "metrics.jsonl"
            if path.is_file():
                _keep_up_to(path, initial_step)
            self.jsonl = path.open("a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        for name, value in values.items():
            self.tensorboard.add_scalar(name, value, step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        shown = {
            k: f"{v:.4g}"
            for k, v in values.items()
            if k in ("train/loss", "val/loss", "train/tokens_per_s")
        }
        self.progress.set_postfix(shown, refresh=False)

    def text(self, step: int, tag: str, lines: list[str]) -> None:
        if self.active:
            self.tensorboard.add_text(tag, "\n\n".join(lines), step)
            for line in lines:
                self.progress.write(line)

    def advance(self, steps: int = 1) -> None:
        self.progress.update(steps)

    def close(self) -> None:
        self.progress.close()
        if self.active:
            self.tensorboard.close()
            self.jsonl.close()


def _keep_up_to(path: Path, step: int) -> None:
    """Rewrites metrics.jsonl without the lines of steps after `step` (and any torn last line)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_file(path, overwrite=True) as tmp:  # the run's own log
        tmp.write_text("".join(f"{line}\n" for line in kept))


class StepProfiler:
    """A `jax.profiler` trace of steps [start, start + steps) into `logdir` (TensorBoard's Profile
    tab, XProf or Perfetto read it), on process 0; nothing with steps=0, or when a resumed run
    starts past `start`. The trace stops once the last traced step's result is ready, so it
    holds whole steps, not just their dispatch."""

    def __init__(self, logdir: Path, *, start: int, steps: int):
        self.logdir, self.start, self.end = logdir, start, start + steps
        self.active = steps > 0 and jax.process_index() == 0
        self.tracing = False

    def before(self, step: int) -> None:
        if self.active and step == self.start:
            jax.profiler.start_trace(str(self.logdir))
            self.tracing = True

    def after(self, done: int, result) -> None:
        if self.tracing and done >= self.end:
            self.stop(result)

    def stop(self, result=None) -> None:
        if self.tracing:
            jax.block_until_ready(result)
            jax.profiler.stop_trace()
            self.tracing = False
