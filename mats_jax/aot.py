"""Will it fit, and how fast could it be? Compile MATS for a TPU pod on this machine, ahead of time.

    python -m mats_jax.aot --config=configs/mats_llama.py --topology=v5p-8
    python -m mats_jax.aot --config=configs/mats_llama.py --topology=v5e-16 \\
        --config.mesh.data=8 --config.mesh.tensor=2 --step_time=0.5

libtpu compiles for any TPU topology on a CPU host (`jax.experimental.topologies` makes
compile-only devices), so no TPU and no weights are needed: the model is built with
`nnx.eval_shape` (Vicuna-7B costs nothing here) and the programs are the real ones —
- `train`: the trainer's step (`steps.make_train_step`) with the shardings the trainer
  derives from the config's mesh and logical-axis rules, donated state, the config's batch,
  gradient accumulation, remat and sequence layout ([head][prefix][tail]);
- `generate`: what the listener runs per batch of CLAP embeddings — `MATS.prompt_embeddings`
  then the compiled decode of `mats_jax.models.sampler` with the paper's settings (beam 4, 200 new
  tokens), the model sharded by the same rules.
XLA then says, per chip, what each program keeps in HBM (arguments, outputs, temporaries and code;
donated buffers counted once) and what it computes and moves (its cost analysis: one call, a loop
body counted once, so generate's figures are a prefill and one decode step), and lists the
collectives it inserted. For the train step the report adds the model FLOPs (4·N·tokens for the
frozen LLM, whose weights get no gradient, plus 6·N per use for the trained mapper, projector
and LoRA), the step time that 50% MFU means, and the compiled step's roofline: its own FLOPs at
the chip's peak or its HBM traffic at the chip's bandwidth, whichever takes longer.

The mesh, batch and everything else are overridden as for the trainer (`--config.mesh.fsdp=16`).
Exit status 2 with one line on stderr when a program does not fit a chip's HBM (or --hbm_gib),
when the topology is unknown, or when the config does not fit the topology's devices.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mats_jax.config import check_layout, check_paths, check_values, targets_per_row
from mats_jax.mats.build import abstract_mats, llm_architecture
from mats_jax.mats.model import MATS, TRAINABLE
from mats_jax.mats.prompt import InferenceBatch, PackedBatch, TrainingBatch
from mats_jax.models import sampler
from mats_jax.runtime import cli
from mats_jax.runtime.sharding import BATCH_AXES, make_mesh, state_shardings
from mats_jax.runtime.tpu import AotError, GiB, ProgramReport, Topology, analyse, topology
from mats_jax.training import optim, steps

_TOPOLOGY = flags.DEFINE_string("topology", None, "a TPU slice: v5p-8, v4-32, v5e-16, v6e-64, ...")
_PROGRAMS = flags.DEFINE_list("programs", ["train", "generate"], "which programs to compile")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "HBM budget per chip in GiB (default: the chip's)")
_STEP_TIME = flags.DEFINE_float("step_time", None, "seconds per train step to state the MFU at")
_HEAD_LENGTH = flags.DEFINE_integer(
    "head_length",
    8,
    "tokens of BOS + 'USER: <Speech>' (about 8 in LLaMA-2's tokenizer; a few more or "
    "fewer move the figures by well under 1%)",
)
_PROMPT_LENGTH = flags.DEFINE_integer(
    "prompt_length",
    32,
    "generate: prompt tokens after the audio ('</Speech> [tag] instruction\\nASSISTANT:')",
)
_GENERATE_BATCH = flags.DEFINE_integer(
    "generate_batch", None, "generate: prompts per call (default eval.batch_size)"
)
_REPORT = flags.DEFINE_string("report", None, "also write the figures here as JSON")

PROGRAMS = ("train", "generate")
REMEDIES = (
    "split the frozen weights (--config.mesh.tensor, --config.mesh.fsdp), accumulate gradients "
    "(--config.train.grad_accum) or rematerialise (--config.train.remat=True)"
)

# ---- the programs -----------------------------------------------------------------------------


def lower_train(
    model: MATS, config: ml_collections.ConfigDict, mesh: Mesh, rules, head_length: int
):
    """The trainer's step, lowered for abstract state, frozen weights and batch."""
    t = config.train
    graphdef, trainable, rngs, frozen = steps.split(model)
    tx, schedule = optim.from_config(t)
    state = jax.eval_shape(
        lambda params, streams: steps.init_state(params, streams, tx), trainable, rngs
    )
    state_sharding = steps.state_sharding(state, mesh, rules)
    frozen_sharding = state_shardings(frozen, mesh, rules)
    step = steps.make_train_step(
        graphdef,
        tx,
        seed=t.seed,
        schedule=schedule,
        state_sharding=state_sharding,
        frozen_sharding=frozen_sharding,
        batch_sharding=steps.batch_sharding(mesh, packed=config.data.packed_length > 0),
        remat=t.remat,
    )
    return step.lower(state, frozen, abstract_batch(config, head_length))


def abstract_batch(config: ml_collections.ConfigDict, head_length: int) -> steps.Batch:
    """The trainer's step input with shapes only: packed rows, or one padded example per row."""
    t, d = config.train, config.data
    rows = (t.grad_accum, t.batch_size // t.grad_accum)
    sds = jax.ShapeDtypeStruct
    if d.packed_length:
        grid = rows + (d.packed_length,)
        slots = rows + (d.max_per_row,)
        inputs = PackedBatch(
            *(sds(grid, jnp.int32) for _ in range(4)),
            sds(grid, jnp.bool_),
            sds(slots, jnp.bool_),
            sds(rows + (targets_per_row(d),), jnp.int32),
        )
        return steps.Batch(inputs, sds(slots + (config.clap.dim,), jnp.float32))
    tail = rows + (d.tail_length,)
    inputs = TrainingBatch(
        sds((t.grad_accum, head_length), jnp.int32),
        sds(tail, jnp.int32),
        sds(tail, jnp.bool_),
        sds(tail, jnp.bool_),
    )
    return steps.Batch(inputs, sds(rows + (config.clap.dim,), jnp.float32))


def positions_per_row(config: ml_collections.ConfigDict, head_length: int) -> int:
    d = config.data
    return d.packed_length or head_length + config.mapper.prefix_length + d.tail_length


def lower_generate(
    model: MATS,
    hf_config: dict,
    mesh: Mesh,
    rules,
    batch: int,
    head_length: int,
    prompt_length: int,
):
    """CLAP embeddings [batch, dim] -> the paper's beam-search output, as the listener runs it:
    the prompt embeddings (mapper, projector, LLM embedding) then `generation`'s compiled decode."""
    eos, pad = hf_config.get("eos_token_id"), hf_config.get("pad_token_id")
    config = sampler.GenerationConfig.paper(eos_token_id=eos, pad_token_id=pad)
    graphdef, state = nnx.split(model)
    rows, replicated = (
        NamedSharding(mesh, PartitionSpec(BATCH_AXES)),
        NamedSharding(mesh, PartitionSpec()),
    )

    def describe(state, clap, head, tail, tail_mask):
        model = nnx.merge(graphdef, state)
        embeddings, mask = model.prompt_embeddings(clap, InferenceBatch(head, tail, tail_mask))
        # `sampler.generate` is this jitted decode plus a copy of its result to the host
        return sampler._generate(model.llm, None, embeddings, mask, None, config=config)

    fn = jax.jit(
        describe, in_shardings=(state_shardings(state, mesh, rules), rows, replicated, rows, rows)
    )
    sds = jax.ShapeDtypeStruct
    return fn.lower(
        state,
        sds((batch, model.config.mapper.clap_dim), jnp.float32),
        sds((head_length,), jnp.int32),
        sds((batch, prompt_length), jnp.int32),
        sds((batch, prompt_length), jnp.bool_),
    )


def model_flops(
    model: MATS, config: ml_collections.ConfigDict, head_length: int
) -> dict[str, float]:
    """The useful FLOPs of one train step: 4·N·tokens for the frozen LLM's matrices (forward and
    the activations' gradient; the input embedding is a lookup), 6·N per use for the trained
    ones (LoRA per token; mapper blocks per mapper token; its input layers per example; the
    projector per prefix token). Attention scores are left out, as usual."""
    m, t = config.mapper, config.train
    tokens = t.batch_size * positions_per_row(config, head_length)
    examples = t.batch_size * (config.data.max_per_row if config.data.packed_length else 1)
    count = {"llm": 0, "trainable": 0}
    flops = 0.0
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        keys = [str(k) for k in path]
        if variable.ndim < 2 or "embed_tokens" in keys or "prefix_const" in keys:
            continue
        size = math.prod(variable.shape)
        if keys[0] == "llm" and not isinstance(variable, nnx.LoRAParam):
            count["llm"] += size
            flops += 4 * size * tokens
            continue
        count["trainable"] += size
        if keys[0] == "llm":
            uses = tokens
        elif keys[0] == "projector":
            uses = examples * m.prefix_length
        elif "layers" in keys:
            uses = examples * (m.clip_length + m.prefix_length)
        else:
            uses = examples
        flops += 6 * size * uses
    return {
        "flops": flops,
        "llm_matrix_params": count["llm"],
        "trained_matrix_params": count["trainable"],
        "tokens": tokens,
    }


def parameter_count(state: nnx.State) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(state)))


# ---- the command ------------------------------------------------------------------------------


def run(
    config: ml_collections.ConfigDict,
    topology_name: str,
    *,
    programs: list[str],
    hbm_gib: float | None,
    step_time: float | None,
    head_length: int,
    prompt_length: int,
    generate_batch: int | None,
) -> dict:
    """Compile `programs` for the topology and return the figures; raises AotError when the
    config does not fit the topology or a program does not fit the HBM budget (after printing)."""
    unknown = sorted(set(programs) - set(PROGRAMS))
    if unknown or not programs:
        raise AotError(
            f"--programs: {', '.join(unknown) or 'none'} given; choose from {', '.join(PROGRAMS)}"
        )
    slice_ = topology(topology_name)
    chip = slice_.chip
    budget = (hbm_gib or chip.hbm_gib) * GiB
    devices = slice_.devices()
    try:
        mesh = make_mesh(config.mesh, devices)
    except ValueError as e:
        raise AotError(f"{topology_name} has {slice_.chips} chips: {e}") from None
    rules = tuple(tuple(rule) for rule in config.sharding_rules)
    generate_batch = generate_batch or config.eval.batch_size
    check_values(config)
    check_layout(config, mesh, generate_batch)
    check_paths(config, ("llm.checkpoint",))
    family, hf_config = llm_architecture(config)
    model = abstract_mats(config)
    trainable = nnx.state(model, TRAINABLE)
    frozen = nnx.state(model, nnx.All(nnx.Param, nnx.Not(TRAINABLE)))
    t = config.train
    layout = (head_length, config.mapper.prefix_length, config.data.tail_length)
    print(
        f"{topology_name}: {slice_.chips} × TPU {topology_name.split('-')[0]} "
        f"({chip.hbm_gib:g} GiB HBM, "
        f"{chip.peak_tflops:g} TFLOP/s bf16, {chip.hbm_gbps:g} GB/s per chip); mesh "
        + " ".join(f"{k}={v}" for k, v in mesh.shape.items())
    )
    print(
        f"MATS: {family} LLM {parameter_count(frozen) / 1e9:.2f}B frozen "
        f"({config.llm.param_dtype}), {parameter_count(trainable) / 1e6:.0f}M trained "
        f"(float32, AdamW); train batch {t.batch_size} × {positions_per_row(config, head_length)} "
        + (
            f"positions (packed rows of up to {config.data.max_per_row} examples)"
            if config.data.packed_length
            else f"positions ({' + '.join(map(str, layout))} head/prefix/tail)"
        )
        + f" in {t.grad_accum} "
        f"micro-batch(es), remat {t.remat}"
        + (
            f"; generate {generate_batch} prompts, beam 4, 200 new tokens"
            if "generate" in programs
            else ""
        )
    )

    reports = []
    for name in programs:
        lowered = (
            lower_train(model, config, mesh, rules, head_length)
            if name == "train"
            else lower_generate(
                model, hf_config, mesh, rules, generate_batch, head_length, prompt_length
            )
        )
        reports.append(analyse(name, lowered, REMEDIES))
    print_table(reports, budget)

    figures = {
        "topology": topology_name,
        "chips": slice_.chips,
        "chip": dataclasses.asdict(chip),
        "hbm_budget_bytes": budget,
        "mesh": dict(mesh.shape),
        "llm": {"family": family, **hf_config},
        "params": {"frozen": parameter_count(frozen), "trainable": parameter_count(trainable)},
        "programs": {
            r.name: {**dataclasses.asdict(r), "total": r.total, "fits": r.total <= budget}
            for r in reports
        },
    }
    train = next((r for r in reports if r.name == "train"), None)
    if train is not None:
        figures["train"] = train_speed(
            train, model_flops(model, config, head_length), slice_, step_time
        )
    too_big = [r for r in reports if r.total > budget]
    figures["fits"] = not too_big
    if too_big:
        r = too_big[0]
        figures["error"] = (
            f"the {r.name} program needs {r.total / GiB:.1f} GiB per chip, more than the "
            f"{budget / GiB:g} GiB of HBM: {REMEDIES}"
        )
    return figures


def print_table(reports: list[ProgramReport], budget: float) -> None:
    print(
        f"\n{'per chip':10}{'args':>8}{'outputs':>9}{'aliased':>9}{'temps':>8}{'code':>7}"
        f"{'total':>8}{'HBM':>7}  fits{'TFLOP':>8}{'HBM GB':>8}{'compile s':>11}"
        "   (GiB; TFLOP and GB moved: one call)"
    )
    gib = lambda n: f"{n / GiB:.2f}"
    for r in reports:
        print(
            f"{r.name:10}{gib(r.arguments):>8}{gib(r.outputs):>9}{gib(r.aliased):>9}{gib(r.temporaries):>8}"
            f"{gib(r.code):>7}{gib(r.total):>8}{budget / GiB:>7.1f}  "
            f"{'yes' if r.total <= budget else 'NO':4}"
            f"{r.flops / 1e12:>8.3g}{r.bytes_accessed / 1e9:>8.3g}{r.compile_s:>11.0f}"
        )
    for r in reports:
        if r.collectives:
            print(
                f"{r.name} collectives (in the program text; largest buffer each): "
                + ", ".join(
                    f"{kind} {c['count']}× {c['bytes'] / 1e9:.2f} GB"
                    for kind, c in sorted(r.collectives.items())
                )
            )


def train_speed(
    train: ProgramReport, useful: dict[str, float], slice_: Topology, step_time: float | None
) -> dict[str, float]:
    """MFU figures of the train step (printed): the step time of 50% MFU, the MFU at `step_time`,
    and the compiled program's roofline (its FLOPs at peak vs its HBM traffic at full bandwidth)."""
    chip, chips = slice_.chip, slice_.chips
    peak = chip.peak_tflops * 1e12 * chips
    compute_s = train.flops / (chip.peak_tflops * 1e12)
    memory_s = train.bytes_accessed / (chip.hbm_gbps * 1e9)
    bound_s = max(compute_s, memory_s)
    out = {
        **useful,
        "xla_flops_per_chip": train.flops,
        "xla_over_model": train.flops * chips / useful["flops"],
        "step_s_at_50pct_mfu": useful["flops"] / (0.5 * peak),
        "roofline_compute_s": compute_s,
        "roofline_memory_s": memory_s,
        "mfu_at_roofline": useful["flops"] / (bound_s * peak),
    }
    print(
        f"\ntrain step: {useful['flops'] / 1e12:.3g} TFLOP of model FLOPs (4·N·tokens, frozen LLM "
        f"N={useful['llm_matrix_params'] / 1e9:.2f}B, {useful['tokens']} tokens; "
        f"6·N per use, trained N={useful['trained_matrix_params'] / 1e6:.0f}M); "
        f"XLA counts {out['xla_over_model']:.2f}× that."
    )
    print(
        f"  50% MFU = {out['step_s_at_50pct_mfu']:.3g} s/step on {chips} chips"
        + (
            f"; at {step_time:g} s/step the MFU is "
            f"{100 * useful['flops'] / (step_time * peak):.0f}%"
            if step_time
            else ""
        )
    )
    print(
        f"  roofline of the compiled step: {compute_s:.3g} s of FLOPs at peak, "
        f"{memory_s:.3g} s of HBM traffic at full bandwidth: "
        f"{'compute' if compute_s >= memory_s else 'memory'}-bound, "
        f"MFU ≤ {100 * out['mfu_at_roofline']:.0f}% before any collective or stall"
    )
    if step_time:
        out["mfu_at_step_time"] = useful["flops"] / (step_time * peak)
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    if cli.CONFIG.value is None or _TOPOLOGY.value is None:
        cli.fail("--config and --topology are required")
    try:
        figures = run(
            cli.CONFIG.value,
            _TOPOLOGY.value,
            programs=_PROGRAMS.value,
            hbm_gib=_HBM_GIB.value,
            step_time=_STEP_TIME.value,
            head_length=_HEAD_LENGTH.value,
            prompt_length=_PROMPT_LENGTH.value,
            generate_batch=_GENERATE_BATCH.value,
        )
    except cli.INPUT_ERRORS as e:  # ModelFileError among them: an unreadable llm.checkpoint
        cli.fail(str(e))
    if _REPORT.value:
        Path(_REPORT.value).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if not figures["fits"]:
        cli.fail(figures["error"])


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")  # the host runs nothing but the compiler
    app.run(main, flags_parser=cli.parse_flags)
