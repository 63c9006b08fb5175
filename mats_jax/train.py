"""Train MATS from text alone: `python -m mats_jax.train --config=configs/default.py --workdir=DIR`.

Override any config value on the command line (`--config.train.lr=1e-4`); an unknown key, a mesh
that does not fit the devices, a batch that the data axes cannot split, or a missing checkpoint
path fails before any work. Restarting with the same --workdir resumes exactly where the last
checkpoint left off (model, optimiser, data order); SIGTERM saves a checkpoint and exits.

The same command runs as every process of a multi-host run (launch/): each process reads only
the rows of each batch its devices hold, process 0 alone writes logs, metrics and caches into
the shared workdir, and the losses are those of one process driving all the devices. A
checkpoint restores onto any number of processes and devices.

The trainer reads top to bottom: check the config, build the mesh, the model and the data, create
or restore the state, then loop (step, log, evaluate, checkpoint).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_flags

from mats_jax.clap import text_cache
from mats_jax.config import ConfigError, check_layout, check_paths, check_values
from mats_jax.data import pipeline
from mats_jax.data.prepare import corpus_for_run
from mats_jax.mats.build import build_mats
from mats_jax.mats.prompt import PromptBuilder
from mats_jax.models.sampler import GenerationConfig, generate
from mats_jax.runtime import cli, distributed
from mats_jax.runtime.sharding import BATCH_AXES, make_mesh
from mats_jax.training import optim, steps
from mats_jax.training import workdir as workdirs
from mats_jax.training.metrics import MetricsWriter, StepProfiler

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<name>.py", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics and caches go here")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Everything that can be checked before loading anything."""
    check_values(config)
    try:
        mesh = make_mesh(config.mesh)
    except ValueError as e:
        processes = (
            f" ({jax.process_count()} processes × {jax.local_device_count()} devices)"
            if jax.process_count() > 1
            else ""
        )
        raise ConfigError(f"{e}{processes}") from None
    check_layout(config, mesh)
    check_paths(config)


class StopOnSignal:
    """Turns SIGTERM (preemption) into a stop after a step that every process agrees on.

    One process: a Python handler sets a flag the loop checks after each step. Several: jax's
    preemption sync manager (started by jax.distributed.initialize) catches SIGTERM in any
    process and names the same step to all of them; stopping at different steps would leave the
    collective checkpoint waiting for processes that have left.
    """

    def __init__(self):
        self.requested = False
        self.multiprocess = jax.process_count() > 1

    def __enter__(self):
        if not self.multiprocess:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint after this step, then stopping")
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Call once after every step (all processes, from the same first step)."""
        if self.multiprocess:
            self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if not self.multiprocess:
            signal.signal(signal.SIGTERM, self.previous)


def train(config: ml_collections.ConfigDict, workdir: Path) -> None:
    check_config(config)
    workdir.mkdir(parents=True, exist_ok=True)
    if distributed.is_process_zero():  # what generation and evaluation rebuild the model from
        workdirs.write_config(workdir, config)
    distributed.barrier("config written")
    distributed.wait_for_file(
        workdir / workdirs.CONFIG_FILE
    )  # the workdir is shared, or this fails clearly
    mesh = make_mesh(config.mesh)
    rules = tuple(tuple(rule) for rule in config.sharding_rules)
    t = config.train

    # Model: frozen LLM (+ LoRA) and the trainable bridge; CLAP only embeds the corpus texts.
    model, tokenizer = build_mats(config)
    builder = PromptBuilder(
        tokenizer,
        tail_length=config.data.tail_length,
        max_answer_tokens=config.data.max_answer_tokens,
    )

    # Data: the prepared corpus, its CLAP text embeddings (cached), this process's share of each
    # batch.
    corpus_dir = corpus_for_run(config.data, workdir)
    manifest = pipeline.load_manifest(corpus_dir)
    all_texts = (record.text for record in pipeline.all_records(corpus_dir, manifest))
    table = text_cache.for_corpus(
        corpus_dir, all_texts, checkpoint=config.clap.checkpoint, seed=config.clap.seed, mesh=mesh
    )

    def to_arrays(records):
        batch = builder.training_batch(
            [r.instruction for r in records], [r.tag for r in records], [r.answer for r in records]
        )
        return batch, table.lookup([r.text for r in records])

    micro = t.batch_size // t.grad_accum
    shard, shards = distributed.batch_shard(NamedSharding(mesh, PartitionSpec(BATCH_AXES)), micro)
    train_data = pipeline.make_iterator(
        corpus_dir,
        sources=dict(config.data.sources),
        split="train",
        batch_size=micro,
        seed=config.data.seed,
        batch_fn=to_arrays,
        shard_index=shard,
        shard_count=shards,
    )
    val_records = pipeline.first_records(
        corpus_dir,
        source=config.data.val_source,
        split="val",
        count=config.eval.batches * config.eval.batch_size,
    )

    # State: trainable f32 parameters with AdamW, sharded by the logical-axis rules.
    graphdef, trainable, rngs, frozen = steps.split(model)
    del model
    tx, schedule = optim.from_config(t)
    state, state_sharding, frozen, frozen_sharding = steps.place(
        trainable, rngs, frozen, tx, mesh, rules
    )

    checkpoints = workdirs.checkpoints(workdir, config)
    start = checkpoints.latest_step() or 0
    if start:
        state = checkpoints.restore(start, state, train_data)
        logging.info("resumed from step %d", start)

    batch_sharding = steps.batch_sharding(mesh)
    step_fn = steps.make_train_step(
        graphdef,
        tx,
        seed=t.seed,
        schedule=schedule,
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=batch_sharding,
        remat=t.remat,
    )
    eval_fn = steps.make_eval_step(
        graphdef,
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=batch_sharding,
    )

    def global_batch(micro_batches, rows: int = micro):
        """One step's Batch from this process's share of each micro-batch: the shared head [H]
        as is, the row-sharded fields [A, b, ...] placed as rows of [A, rows, ...]."""
        local = steps.Batch.from_micro_batches(
            [b for b, _ in micro_batches], [c for _, c in micro_batches]
        )
        return jax.tree.map(
            lambda x, s: jax.make_array_from_process_local_data(
                s, np.asarray(x), x.shape if x.ndim == 1 else (x.shape[0], rows, *x.shape[2:])
            ),
            local,
            batch_sharding,
        )

    def val_batch(records):
        """Every process holds all validation records; each places the rows its devices hold."""
        size = len(records)
        lo, hi = (size * shard // shards, size * (shard + 1) // shards)
        return global_batch([to_arrays(records[lo:hi])], rows=size)

    val_batches = [
        val_batch(val_records[i : i + config.eval.batch_size])
        for i in range(0, len(val_records), config.eval.batch_size)
    ]

    def evaluate(step: int) -> None:
        total = count = 0.0
        for batch in val_batches:
            loss, n = eval_fn(state, frozen, batch)
            total, count = total + float(loss), count + float(n)
        writer.scalars(step, {"val/loss": total / max(count, 1.0)})
        samples = val_records[: config.eval.samples]
        if samples:
            model = nnx.merge(graphdef, state.trainable, state.rngs, frozen)
            prompt = builder.inference_batch(
                [r.instruction for r in samples], [r.tag for r in samples]
            )
            embeddings, mask = model.prompt_embeddings(
                jnp.asarray(table.lookup([r.text for r in samples])), prompt
            )
            new = generate(
                model.llm,
                embeddings=embeddings,
                attention_mask=mask,
                config=GenerationConfig(
                    max_new_tokens=config.eval.max_new_tokens, eos_token_id=tokenizer.eos_token_id
                ),
            )
            writer.text(
                step,
                "val/reconstructions",
                [
                    f"[step {step}] {r.answer!r} -> "
                    f"{tokenizer.decode(ids, skip_special_tokens=True)!r}"
                    for r, ids in zip(samples, new)
                ],
            )

    writer = MetricsWriter(workdir, total_steps=t.steps, initial_step=start)
    if start == 0:
        evaluate(0)
    first = global_batch([next(train_data) for _ in range(t.grad_accum)])
    compile_start = time.perf_counter()
    compiled = step_fn.lower(state, frozen, first).compile()
    flops = (compiled.cost_analysis() or {}).get("flops", 0.0)
    writer.scalars(start, {"perf/compile_s": time.perf_counter() - compile_start})

    profiler = StepProfiler(workdir / "tensorboard", start=t.profile_start, steps=t.profile_steps)
    with StopOnSignal() as stop:
        batch, last_time, last_step = first, time.perf_counter(), start
        for step in range(start, t.steps):
            profiler.before(step)
            state, metrics = compiled(state, frozen, batch)  # asynchronous: the host goes on
            done = step + 1
            profiler.after(done, state)
            writer.advance()
            if done % t.log_every == 0 or done == t.steps:
                metrics = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
                now = time.perf_counter()
                seconds = (now - last_time) / (done - last_step)
                last_time, last_step = now, done
                metrics |= {
                    "perf/step_s": seconds,
                    "train/tokens_per_s": metrics["train/tokens"] / seconds,
                }
                if t.peak_flops_per_device:
                    metrics["perf/mfu"] = (
                        flops / seconds / (t.peak_flops_per_device * jax.device_count())
                    )
                writer.scalars(done, metrics)
            if done % config.eval.every == 0 or done == t.steps:
                evaluate(done)
            stopping = stop.should_stop(done)
            if done % t.checkpoint_every == 0 or done == t.steps or stopping:
                checkpoints.save(done, state, train_data)  # the iterator stands at batch done+1
            if stopping:
                break
            if done < t.steps:
                batch = global_batch([next(train_data) for _ in range(t.grad_accum)])
    profiler.stop(state)  # a run that ended (or was stopped) inside the traced steps
    checkpoints.wait()
    checkpoints.close()
    writer.close()


if __name__ == "__main__":
    cli.run(train, _CONFIG, _WORKDIR)
