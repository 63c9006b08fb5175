"""TPU slices on any machine: libtpu's compile-only devices for a topology, and what XLA says of a
program compiled for them (memory per chip, FLOPs, HBM traffic, collectives).

`jax.experimental.topologies` makes compile-only devices for any TPU slice on a CPU host, so a
program can be compiled ahead of time and measured with no TPU at all (`python -m mats_jax.aot`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from pathlib import Path

import jax

from mats_jax.runtime.errors import InputError

GiB = 2**30
AOT_LIBTPU = Path(sys.prefix) / "libtpu-aot" / "libtpu" / "libtpu.so"


class AotError(InputError):
    """A topology, mesh or program that cannot be compiled or does not fit."""


# ---- topologies -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip as JAX sees it (v4 and v5p: both TensorCores form one "megacore" device).
    Public per-chip figures: HBM, dense bf16 peak, HBM bandwidth."""

    kind: str  # libtpu's name in topology strings ("v5" is v5p)
    megacore: bool  # slice names count TensorCores: v5p-8 is 4 chips
    hbm_gib: float
    peak_tflops: float
    hbm_gbps: float


CHIPS = {
    "v4": Chip("v4", True, 32, 275, 1200),
    "v5p": Chip("v5", True, 95, 459, 2765),
    "v5e": Chip("v5e", False, 16, 197, 819),
    "v6e": Chip("v6e", False, 32, 918, 1640),
}
CUBES = (
    (2, 2, 1),
    (2, 2, 2),
    (2, 2, 4),
    (2, 4, 4),
    (4, 4, 4),
    (4, 4, 8),
    (4, 8, 8),
    (8, 8, 8),
    (8, 8, 16),
    (8, 16, 16),
)  # v4, v5p: 3-D torus slices
SQUARES = ((1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16))  # v5e, v6e


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    chip: Chip
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    def devices(self) -> list[jax.Device]:
        """libtpu's compile-only devices for this slice (no TPU needed, none touched)."""
        from jax.experimental.topologies import get_topology_desc

        # setup.sh keeps libtpu out of site-packages (see there); a TPU VM's own libtpu also works.
        if AOT_LIBTPU.is_file():
            os.environ.setdefault("TPU_LIBRARY_PATH", str(AOT_LIBTPU))
        # Without these libtpu probes for a TPU VM and prints errors about what it cannot find;
        # a compile-only client also need not take the one-process-per-host lock.
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", self.name)
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        if len(self.shape) == 3:  # slices of 64 chips and more are full tori
            wrap = (min(self.shape) >= 4,) * 3
        else:
            wrap = (self.shape[0] == 16, self.shape[1] == 16, False)
        try:
            desc = get_topology_desc(
                platform="tpu",
                topology_name=f"{self.chip.kind}:{'x'.join(map(str, self.shape))}",
                chip_config_name="megacore" if self.chip.megacore else "default",
                chips_per_host_bounds=(1, 1, 1) if self.chips == 1 else (2, 2, 1),
                num_slices=1,
                wrap=wrap,
            )
        except RuntimeError as e:
            if "not installed" not in str(e):
                raise
            raise AotError(
                f"no libtpu at {AOT_LIBTPU} or in site-packages: run `bash setup.sh` "
                "(or set TPU_LIBRARY_PATH to a libtpu.so)"
            ) from None
        if len(desc.devices) != self.chips:
            raise AotError(
                f"{self.name}: libtpu made {len(desc.devices)} devices, expected {self.chips}"
            )
        return desc.devices


def _topologies() -> dict[str, Topology]:
    out = {}
    for family, chip in CHIPS.items():
        for shape in CUBES if chip.megacore else SQUARES:
            chips = math.prod(shape)
            name = f"{family}-{2 * chips if chip.megacore else chips}"
            out[name] = Topology(name, chip, shape)
    return out


TOPOLOGIES = _topologies()


def topology(name: str) -> Topology:
    if name not in TOPOLOGIES:
        raise AotError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[name]


# ---- what the compiler says -------------------------------------------------------------------

_COLLECTIVE = re.compile(
    r"= (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")


def collectives(hlo: str) -> dict[str, dict[str, float]]:
    """{kind: {count, bytes}} of the collectives in the optimised program text (a loop body counts
    once; bytes = each op's largest buffer, e.g. the gathered array)."""
    out: dict[str, dict[str, float]] = {}
    for shape, kind in _COLLECTIVE.findall(hlo):
        sizes = [
            math.prod(int(d) for d in dims.split(",") if d) * _bytes(dtype)
            for dtype, dims in _ARRAY.findall(shape)
        ]
        entry = out.setdefault(kind, {"count": 0, "bytes": 0.0})
        entry["count"] += 1
        entry["bytes"] += max(sizes, default=0)
    return out


def _bytes(dtype: str) -> int:
    """Bytes per element of an HLO type: pred, s8, bf16, f32, u64, ..."""
    return 1 if dtype == "pred" else max(1, int(dtype.lstrip("bfsu")) // 8)


@dataclasses.dataclass
class ProgramReport:
    """Per-chip figures of one compiled program (bytes; FLOPs and traffic of one call)."""

    name: str
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    code: int
    flops: float
    bytes_accessed: float
    collectives: dict
    compile_s: float

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code


def analyse(name: str, lowered, advice: str = "") -> ProgramReport:
    """Compiles `lowered` and reads what XLA says of it; a program that exhausts the chip's
    memory is an AotError (with `advice` appended)."""
    start = time.perf_counter()
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        message = str(e).strip().splitlines()[0]
        if "RESOURCE_EXHAUSTED" in message:
            raise AotError(
                f"the {name} program does not fit: {message}" + (f" ({advice})" if advice else "")
            ) from None
        raise
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    return ProgramReport(
        name,
        memory.argument_size_in_bytes,
        memory.output_size_in_bytes,
        memory.alias_size_in_bytes,
        memory.temp_size_in_bytes,
        memory.generated_code_size_in_bytes,
        float(cost.get("flops", 0.0)),
        float(cost.get("bytes accessed", 0.0)),
        collectives(compiled.as_text()),
        seconds,
    )
