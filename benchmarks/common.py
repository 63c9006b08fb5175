"""Shared helpers for the benchmarks: timing, machine ceilings (memory bandwidth, matmul peak),
and printing.

Run `.venv/bin/python benchmarks/common.py [--json PATH]` to print this machine's ceilings alone.

Conventions:
- `timed(fn, runs)` calls `fn` once to compile/warm up (reported as `first_s`, which for a jitted
  JAX function is trace + compile + one run), then `runs` more times; `median_s` is the median of
  those. `fn` must block until its result is ready (use `jax.block_until_ready`).
  `timed_pair(ours, theirs, runs)` (`timed_many` for more than two) alternates the timed runs
  of the functions so that load from other processes (this machine is shared) hits them alike.
- Every benchmark prints its figures as one `RESULT <name> <json>` line (`print_json`) and, with
  `--json PATH` (`add_json_option`), writes the same object to PATH. The object always names the
  benchmark and the machine it ran on (`machine()`), so that a result file is read without its
  run: benchmarks/readme_table.py builds the README's table from benchmarks/results/*.json.
- Ceilings are measured, not looked up: the bandwidth is a numpy copy of a 512 MB array
  (read 512 MB + write 512 MB counted as 1 GB moved), the peak is a 2048² float32 matmul in JAX
  and in PyTorch.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CORES = os.cpu_count() or 1


def setup_torch():
    """Import torch with one intra-op thread per core (JAX's CPU client also uses every core)."""
    import torch

    torch.set_num_threads(CORES)
    return torch


@dataclass
class Timing:
    first_s: float  # first call: compile (JAX) / warm-up, plus one run
    times_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed runs: a noise indicator."""
        return (max(self.times_s) - min(self.times_s)) / self.median_s

    @property
    def compile_s(self) -> float:
        """First call minus a steady-state run: an estimate of the trace + compile time."""
        return max(self.first_s - self.median_s, 0.0)


def timed(
    fn: Callable[[], Any], runs: int = 3, warmup: int = 0, first: Callable[[], Any] | None = None
) -> Timing:
    """Time `fn()`: one first call (`first()` if given, e.g. a cheaper warm-up), `warmup` untimed
    calls, then `runs` timed calls."""
    return timed_pair(fn, None, runs, warmup, first)[0]


def timed_pair(
    fn_a: Callable[[], Any],
    fn_b: Callable[[], Any] | None,
    runs: int = 3,
    warmup: int = 0,
    first_a: Callable[[], Any] | None = None,
    first_b: Callable[[], Any] | None = None,
) -> tuple[Timing, Timing | None]:
    """Like `timed` for two functions whose timed runs alternate (a, b, a, b, ...), so that load
    from other processes on a shared machine hits both sides alike."""
    fns = [fn_a] + ([fn_b] if fn_b is not None else [])
    firsts = [first_a] + ([first_b] if fn_b is not None else [])
    timings = timed_many(fns, runs, warmup, firsts)
    return timings[0], (timings[1] if fn_b is not None else None)


def timed_many(
    fns: list[Callable[[], Any]],
    runs: int = 3,
    warmup: int = 0,
    firsts: list[Callable[[], Any] | None] | None = None,
) -> list[Timing]:
    """`timed_pair` for any number of functions: each one's first call (`firsts[i]` if given),
    then `warmup` untimed rounds and `runs` timed rounds, each round calling every function once
    in order."""
    firsts = firsts or [None] * len(fns)
    timings = []
    for fn, first in zip(fns, firsts):
        start = time.perf_counter()
        (first or fn)()
        timings.append(Timing(time.perf_counter() - start))
    for _ in range(warmup):
        for fn in fns:
            fn()
    for _ in range(runs):
        for fn, timing in zip(fns, timings):
            start = time.perf_counter()
            fn()
            timing.times_s.append(time.perf_counter() - start)
    return timings


def copy_bandwidth_gbs(megabytes: int = 512, runs: int = 5) -> float:
    """Median memory bandwidth (GB/s) of `np.copyto` on a `megabytes` float32 array.

    Counts bytes read + bytes written (a copy of N bytes moves 2N), the convention that makes the
    result comparable with "weight bytes read per token".
    """
    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times) / 1e9


def matmul_peak_gflops(n: int = 2048, runs: int = 5) -> dict[str, float]:
    """Median float32 GFLOP/s of an n×n @ n×n matmul (2n³ flops) in JAX and in PyTorch."""
    import jax
    import jax.numpy as jnp

    torch = setup_torch()
    flops = 2 * n**3
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, precision="highest"))
    t_jax = timed(lambda: jax.block_until_ready(mm(a, b)), runs)
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    t_torch = timed(lambda: torch.mm(ta, tb), runs, warmup=1)
    return {"jax": flops / t_jax.median_s / 1e9, "torch": flops / t_torch.median_s / 1e9}


def ceilings() -> dict[str, float]:
    peak = matmul_peak_gflops()
    return {
        "copy_bandwidth_gbs": copy_bandwidth_gbs(),
        "matmul_gflops_jax": peak["jax"],
        "matmul_gflops_torch": peak["torch"],
    }


def load_average() -> float:
    """1-minute load average (a hint that other work shared the cores during the run)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def load_note() -> str:
    """A warning when other processes were competing for the cores during the run."""
    load = load_average()
    if load > 1.25 * CORES:
        return (
            f"WARNING: 1-minute load average {load:.1f} on {CORES} cores: other processes "
            "shared the CPU, timings are noisy (PyTorch's OpenMP barriers suffer most)."
        )
    return f"load average {load:.2f} on {CORES} cores"


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A markdown table of `rows` (dicts with the same keys), preceded by `title`."""
    if not rows:
        return
    keys = list(rows[0])
    print(f"\n### {title}\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "|".join("---" for _ in keys) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """`--json PATH`: also write the result that `print_json` prints to PATH (pass
    `args.json` to `print_json`)."""
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        default=None,
        help="also write the result JSON (the RESULT line's object) to PATH",
    )


def print_json(name: str, result: dict[str, Any], path: str | Path | None = None) -> None:
    """One machine-readable line, `RESULT <name> <json>`, for scripts that collect results; with
    `path` (a script's `--json`), the same object is also written there. `benchmark` (`name`) and
    `machine` (`machine()`) are added to `result`, so every result says what ran where."""
    result = {"benchmark": name, "machine": machine(), **result}
    print(f"RESULT {name} " + json.dumps(result, default=float, sort_keys=True))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, default=float, sort_keys=True, indent=2) + "\n")
        print(f"wrote {path}")


def package_version(name: str) -> str | None:
    """An installed package's version, without importing it (None when it is not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What ran the benchmark, and when: the CPU model (/proc/cpuinfo), the core count, the load,
    JAX's backend and devices, the accelerator (JAX's device kind; None on a CPU), the JAX,
    PyTorch and Python versions and the UTC date."""
    import jax

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": CORES,
        "load_avg_1m": load_average(),
        "load_note": load_note(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "accelerator": None if jax.default_backend() == "cpu" else jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "torch": package_version("torch"),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def check(targets: dict[str, bool]) -> int:
    """Print which targets were met; the exit status is 0 even when some are missed (a missed
    performance target is a finding, not a crash), unless MATS_BENCH_STRICT=1."""
    print()
    for name, met in targets.items():
        print(f"target {'met   ' if met else 'MISSED'}  {name}")
    strict = os.environ.get("MATS_BENCH_STRICT") == "1"
    return 1 if strict and not all(targets.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="this machine's ceilings")
    add_json_option(parser)
    args = parser.parse_args(argv)
    row = {"cores": CORES, **ceilings(), "load_avg_1m": load_average()}
    print_table("machine ceilings", [row])
    print_json("ceilings", {"rows": [row]}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
