"""Train MATS from text alone: `python -m mats_jax.train --config=configs/default.py --workdir=DIR`.

Override any config value on the command line (`--config.train.lr=1e-4`); an unknown key, a mesh
that does not fit the devices, a batch that the data axes cannot split, or a missing checkpoint
path fails before any work. `--config.train.init_from=WORKDIR` (or WORKDIR/checkpoints/STEP, or
a `convert mats` import) starts a new run from that checkpoint's trainable weights with a fresh
optimiser at step 0 (said, and recorded in run_start.json); an import is never resumed itself.
Restarting with the same --workdir resumes exactly where the last checkpoint left off (model,
optimiser, data order) and says so; a damaged newest checkpoint is moved aside and the one before
it restored. A restart may change the steps, intervals or optimiser settings (said and recorded
in config_changes.jsonl), not what the checkpoints hold (model sizes, LLM, CLAP, batch layout,
data). SIGTERM or Ctrl-C saves a checkpoint and exits.
One trainer per workdir: a second one fails at once, naming the first.

The same command runs as every process of a multi-host run (launch/): each process reads only
the rows of each batch its devices hold, process 0 alone writes logs, metrics and caches into
the shared workdir, and the losses are those of one process driving all the devices. A
checkpoint restores onto any number of processes and devices.

The trainer reads top to bottom: check the config, guard the workdir, build the mesh, the model
and the data, create or restore the state, then loop (step, log, evaluate, checkpoint).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from mats_jax.clap import text_cache
from mats_jax.clap.load import load_clap_or_random
from mats_jax.clap.text_dropout import TrainModeText
from mats_jax.config import (
    ConfigError,
    check_layout,
    check_paths,
    check_values,
    targets_per_row,
)
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
    """Turns SIGTERM (preemption) and Ctrl-C into a stop after a step that every process agrees
    on, with a checkpoint.

    One process: a Python handler sets a flag the loop checks after each step (a second Ctrl-C
    quits at once, without saving). Several: jax's preemption sync manager (started by
    jax.distributed.initialize) catches SIGTERM in any process and names the same step to all
    of them; stopping at different steps would leave the collective checkpoint waiting for
    processes that have left.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.multiprocess = jax.process_count() > 1

    def __enter__(self):
        if not self.multiprocess:
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        print(f"{name}: saving a checkpoint after this step, then stopping", file=sys.stderr)
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Call once after every step (all processes, from the same first step)."""
        if self.multiprocess:
            self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if not self.multiprocess:
            for s, handler in self.previous.items():
                signal.signal(s, handler)


def guard_workdir(workdir: Path, config: ml_collections.ConfigDict):
    """One trainer per workdir, and a restart that does not change what its checkpoints hold:
    process 0 takes the workdir's lock, refuses such a change (before anything is written),
    records the harmless ones and writes config.json. Returns the lock (None elsewhere)."""
    workdir.mkdir(parents=True, exist_ok=True)
    lock = None
    if distributed.is_process_zero():
        lock = workdirs.WorkdirLock(workdir).__enter__()
        try:
            saved = workdirs.saved_steps(workdir)
            changes = workdirs.check_restart(workdir, config) if saved else {}
            if changes:
                listed = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
                print(f"changed since the last run: {listed}", file=sys.stderr)
                workdirs.record_changes(workdir, workdirs.saved_steps(workdir)[-1], changes)
            # what generation and evaluation rebuild the model from
            workdirs.write_config(workdir, config)
        except BaseException:
            lock.__exit__(None, None, None)
            raise
    distributed.barrier("config written")
    distributed.wait_for_file(workdir / workdirs.CONFIG_FILE)  # a shared workdir, or this fails
    return lock


def train(config: ml_collections.ConfigDict, workdir: Path) -> None:
    check_config(config)
    source = workdirs.start_of_run(workdir, config)
    lock = guard_workdir(workdir, config)
    try:
        run(config, workdir, lock, source)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def run(
    config: ml_collections.ConfigDict,
    workdir: Path,
    lock: workdirs.WorkdirLock | None,
    source: workdirs.InitSource | None = None,
) -> None:
    """source: the checkpoint a new run starts from (`train.init_from`), None to resume or start
    afresh."""
    mesh = make_mesh(config.mesh)
    rules = tuple(tuple(rule) for rule in config.sharding_rules)
    t = config.train

    # Model: frozen LLM (+ LoRA) and the trainable bridge; CLAP only embeds the corpus texts.
    model, tokenizer = build_mats(config)
    builder = PromptBuilder(
        tokenizer,
        tail_length=config.data.tail_length,
        max_answer_tokens=config.data.max_answer_tokens,
        prefix_length=config.mapper.prefix_length,
    )
    packed, row_length, per_row = (
        config.data.packed_length > 0,
        config.data.packed_length,
        config.data.max_per_row,
    )
    longest = builder.head.size + config.mapper.prefix_length + config.data.tail_length
    if packed and longest > row_length:
        raise ConfigError(
            f"data.packed_length {row_length} is shorter than the longest example: head "
            f"{builder.head.size} + mapper.prefix_length {config.mapper.prefix_length} + "
            f"data.tail_length {config.data.tail_length} = {longest}"
        )

    # Data: the prepared corpus, its CLAP text embeddings (cached), this process's share of each
    # batch: rows of several examples each (packed), or one example per row padded to the tail.
    corpus_dir = corpus_for_run(config.data, workdir)
    manifest = pipeline.load_manifest(corpus_dir)
    all_texts = (record.text for record in pipeline.all_records(corpus_dir, manifest))
    table = text_cache.for_corpus(
        corpus_dir, all_texts, checkpoint=config.clap.checkpoint, seed=config.clap.seed, mesh=mesh
    )

    # clap.text_dropout: train batches carry the texts' CLAP token ids, and each step embeds them
    # with the frozen text tower in train mode (`steps.attach_clap_text`); validation, samples
    # and Santa keep the table's eval-mode embeddings.
    train_clap, slot = table.lookup, (config.clap.dim, np.float32)  # what one example carries
    if config.clap.text_dropout:
        tower = TrainModeText(load_clap_or_random(config.clap.checkpoint, seed=config.clap.seed))
        steps.attach_clap_text(model, tower)
        train_clap, slot = tower.tokenize, (tower.text_len, np.int32)

    def example(record):
        return builder.example(record.instruction, record.tag, record.answer)

    def to_arrays(records, clap_of=train_clap):
        batch = builder.training_batch(
            [r.instruction for r in records], [r.tag for r in records], [r.answer for r in records]
        )
        return batch, clap_of([r.text for r in records])

    def to_packed_arrays(rows):
        batch = builder.packed_batch(
            [[example(r) for r in row] for row in rows],
            row_length=row_length,
            max_per_row=per_row,
            max_targets_per_row=targets_per_row(config.data),
        )
        # empty slots: zeros (a zero embedding, or pad ids only, which the tower embeds to zeros)
        clap = np.zeros((len(rows), per_row, slot[0]), slot[1])
        for i, row in enumerate(rows):
            if row:
                clap[i, : len(row)] = train_clap([r.text for r in row])
        return batch, clap

    micro = t.batch_size // t.grad_accum  # rows of a micro-batch
    shard, shards = distributed.batch_shard(NamedSharding(mesh, PartitionSpec(BATCH_AXES)), micro)
    common = dict(
        sources=dict(config.data.sources),
        split="train",
        seed=config.data.seed,
        shard_index=shard,
        shard_count=shards,
    )
    if packed:
        train_data = pipeline.make_packed_iterator(
            corpus_dir,
            rows=micro,
            row_length=row_length,
            max_per_row=per_row,
            length_fn=lambda record: builder.example_length(example(record)),
            max_targets_per_row=targets_per_row(config.data),
            targets_fn=lambda record: builder.example_targets(example(record)),
            batch_fn=to_packed_arrays,
            **common,
        )
        next_micro = lambda: next(train_data)[0]  # the batch (the step counts it)
    else:
        train_data = pipeline.make_iterator(
            corpus_dir, batch_size=micro, batch_fn=to_arrays, **common
        )
        next_micro = lambda: next(train_data)
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

    checkpoints = workdirs.checkpoints(workdir, config, writer=True)
    start, state = checkpoints.restore_newest(
        state, train_data, damaged_to=workdir / workdirs.DAMAGED_CHECKPOINTS
    )
    if start is not None and distributed.is_process_zero():
        print(f"resumed from step {start} ({checkpoints.directory / str(start)})", file=sys.stderr)
    if start is None and source is not None:
        state = state.replace(trainable=workdirs.restore_init_from(source, config, state.trainable))
        if distributed.is_process_zero():
            imported = f" (imported from {source.imported_from})" if source.imported_from else ""
            print(
                f"new run from {source.path}{imported}: its trainable weights (mapper, projector, "
                "LoRA), a fresh optimiser, step 0",
                file=sys.stderr,
            )
            workdirs.record_run_start(workdir, source)
    start = start or 0

    train_sharding = steps.batch_sharding(mesh, packed=packed)
    eval_sharding = steps.batch_sharding(mesh, packed=False)  # validation stays unpacked
    step_fn = steps.make_train_step(
        graphdef,
        tx,
        seed=t.seed,
        schedule=schedule,
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=train_sharding,
        remat=t.remat,
    )
    eval_fn = steps.make_eval_step(
        graphdef,
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=eval_sharding,
    )

    def global_batch(micro_batches, sharding: steps.Batch = train_sharding, rows: int = micro):
        """One step's Batch from this process's share of each micro-batch: shared fields (the
        head) as they are, row fields [A, b, ...] placed as rows of [A, rows, ...]."""
        local = steps.Batch.from_micro_batches(
            [b for b, _ in micro_batches], [c for _, c in micro_batches]
        )
        return jax.tree.map(
            lambda x, s: jax.make_array_from_process_local_data(
                s, x, x.shape if s.spec == PartitionSpec() else (x.shape[0], rows, *x.shape[2:])
            ),
            local,
            sharding,
        )

    def val_batch(records):
        """Every process holds all validation records; each places the rows its devices hold."""
        size = len(records)
        lo, hi = (size * shard // shards, size * (shard + 1) // shards)
        return global_batch(
            [to_arrays(records[lo:hi], table.lookup)], sharding=eval_sharding, rows=size
        )

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
    profiler = StepProfiler(workdir / "tensorboard", start=t.profile_start, steps=t.profile_steps)
    try:
        if start == 0:
            evaluate(0)
        first = global_batch([next_micro() for _ in range(t.grad_accum)])
        compile_start = time.perf_counter()
        compiled = step_fn.lower(state, frozen, first).compile()
        flops = (compiled.cost_analysis() or {}).get("flops", 0.0)
        pending = {"perf/compile_s": time.perf_counter() - compile_start}  # with the first log
        computed = steps.computed_positions(first.inputs, config.mapper.prefix_length)
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
                    efficiency = metrics["train/real_positions"] / computed
                    metrics |= {
                        "perf/step_s": seconds,
                        "train/tokens_per_s": metrics["train/tokens"] / seconds,
                        "train/examples_per_s": metrics["train/examples"] / seconds,
                        "train/real_tokens_per_s": metrics["train/real_positions"] / seconds,
                        "train/packing_efficiency": efficiency,
                    }
                    if t.peak_flops_per_device:  # counted on the real positions only
                        metrics["perf/mfu"] = (
                            flops
                            * efficiency
                            / seconds
                            / (t.peak_flops_per_device * jax.device_count())
                        )
                    writer.scalars(done, pending | metrics)
                    pending = {}
                    if lock is not None:
                        lock.beat()
                if done % config.eval.every == 0 or done == t.steps:
                    evaluate(done)
                stopping = stop.should_stop(done)
                if done % t.checkpoint_every == 0 or done == t.steps or stopping:
                    checkpoints.save(done, state, train_data)  # the iterator stands at done+1
                if stopping:
                    break
                if done < t.steps:
                    batch = global_batch([next_micro() for _ in range(t.grad_accum)])
        profiler.stop(state)  # a run that ended (or was stopped) inside the traced steps
        checkpoints.wait()
    finally:
        checkpoints.close()
        writer.close()


if __name__ == "__main__":
    cli.run(train)
