"""Logical axis names -> mesh axes, with one rules table.

Modules only name their parameters' axes ("embed", "mlp", "vocab", ...). A rules table, which
lives in the config, says which mesh axis (`data`, `fsdp`, `tensor`) each logical axis is split
over; the same model then runs on one CPU, a GPU node or a TPU pod.

Inference tools (listening, embedding) use a plainer layout: models replicated on every device
of the process, each batch split over them (`data_parallel_mesh`, `replicate`, `split_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch's rows are split over

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("qkv", "tensor"),
    ("mlp", "tensor"),
    ("positions", None),
)


def partition_spec(axes: Sequence[str | None], rules: Rules = DEFAULT_RULES) -> PartitionSpec:
    """PartitionSpec for one array's logical axes; a mesh axis is used at most once per array."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name in axes:
        mesh_axes = table.get(name) if name is not None else None
        names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
        names = tuple(n for n in names if n not in used)
        used.update(names)
        spec.append(names[0] if len(names) == 1 else (names or None))
    return PartitionSpec(*spec)


def even_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """`spec` without the mesh axes of any dimension they do not divide: jit takes only even
    shards, and a vocabulary of 32001 (Vicuna + [PAD]) cannot be split in two. That dimension
    is then replicated rather than the run refused."""

    def fits(names, size):
        names = (names,) if isinstance(names, str) else tuple(names or ())
        return size % int(np.prod([mesh.shape[n] for n in names])) == 0

    return PartitionSpec(
        *(names if fits(names, size) else None for names, size in zip(spec, shape))
    )


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedSharding for every variable of `state`; variables without axis names are replicated,
    and so is any dimension its mesh axes do not divide (`even_spec`)."""

    def sharding(variable):
        axes = (
            variable.get_metadata().get("logical_axes")
            if isinstance(variable, nnx.Variable)
            else None
        )
        if not axes:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, even_spec(partition_spec(axes, rules), variable.shape, mesh))

    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(shape: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh; at most one axis may be -1 (all remaining devices)."""
    devices = list(devices or jax.devices())
    sizes = [int(shape[axis]) for axis in MESH_AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive, one may be -1"
        )
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {len(devices)} devices"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh data×fsdp×tensor = {'×'.join(map(str, sizes))} = {int(np.prod(sizes))} "
            f"does not match the {len(devices)} devices"
        )
    # Auto axes: XLA propagates shardings from the inputs' and parameters' annotations.
    return jax.make_mesh(
        tuple(sizes),
        MESH_AXES,
        devices=devices,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
    )


def data_parallel_mesh() -> Mesh:
    """This process's devices, all on the data axis."""
    return make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.local_devices())


def split_rows(mesh: Mesh, rows: np.ndarray) -> jax.Array:
    """`rows` over the mesh's data axis, padded by repeating the last row to a multiple of its
    size (callers keep the first len(rows) results)."""
    rows = np.asarray(rows)
    pad = -len(rows) % mesh.shape["data"]
    padded = np.concatenate([rows, np.repeat(rows[-1:], pad, 0)]) if pad else rows
    return jax.device_put(padded, NamedSharding(mesh, PartitionSpec("data")))


def replicate(mesh: Mesh, module: nnx.Module | None) -> None:
    """Every array of `module` copied to every device of `mesh`, in place, one variable at a time
    (the first device holds the model plus one array, not two models, while this runs)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    for _, node in nnx.iter_graph(module) if module is not None else ():
        if isinstance(node, nnx.Variable):
            node.set_value(jax.device_put(node.get_value(), replicated))
