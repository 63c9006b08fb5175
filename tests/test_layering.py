"""The package's imports run downward only, as pyproject.toml's [tool.mats_jax.layers] declares."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.support.paths import ROOT

PACKAGE = ROOT / "mats_jax"


def declared_layers() -> list[tuple[str, list[str]]]:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mats_jax"]["layers"]
    return list(table.items())


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every mats_jax module `path` imports, at any depth of the file (function-local too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in modules
            )
    return {name for name in found if name in modules}


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int:
    for index, (_, entries) in enumerate(layers):
        if (
            any(module == e or module.startswith(e + ".") for e in entries if e != "mats_jax")
            or module in entries
        ):
            return index
    raise AssertionError(f"{module} is in no layer of pyproject.toml [tool.mats_jax.layers]")


def package_of(module: str, layers: list[tuple[str, list[str]]]) -> str:
    entries = layers[layer_of(module, layers)][1]
    return max(
        (e for e in entries if module == e or module.startswith(e + ".")), key=len, default=module
    )


def test_every_module_imports_only_its_layer_and_below():
    layers, modules = declared_layers(), module_names()
    upward = []
    for module, path in sorted(modules.items()):
        for imported in sorted(imports_of(path, modules)):
            if layer_of(imported, layers) < layer_of(module, layers):
                upward.append(
                    f"{module} ({layers[layer_of(module, layers)][0]}) imports {imported} "
                    f"({layers[layer_of(imported, layers)][0]})"
                )
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_packages_of_a_layer_import_each_other_without_cycles():
    layers, modules = declared_layers(), module_names()
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        for imported in imports_of(path, modules):
            same_layer = layer_of(imported, layers) == layer_of(module, layers)
            a, b = package_of(module, layers), package_of(imported, layers)
            if same_layer and a != b:
                edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n}))
            for n in edges.get(start, ())
        )

    cycles = sorted(a for a in edges if reaches(a, a, {a}))
    assert not cycles, f"packages in an import cycle: {cycles} (edges {edges})"


def test_the_layering_check_sees_an_upward_import(tmp_path):
    """The walk finds imports inside functions too (how commands defer heavy imports), and the
    layers are ordered as declared."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from mats_jax.training import steps\n    import mats_jax.train\n"
    )
    modules = module_names()
    assert imports_of(probe, modules) == {
        "mats_jax.training",
        "mats_jax.training.steps",
        "mats_jax.train",
    }
    layers = declared_layers()
    assert (
        layer_of("mats_jax.train", layers)
        < layer_of("mats_jax.training.steps", layers)
        < layer_of("mats_jax.mats.model", layers)
        < layer_of("mats_jax.models.layers", layers)
        < layer_of("mats_jax.runtime.cli", layers)
        == layer_of("mats_jax.config", layers)
    )


def test_no_two_modules_differ_only_by_a_suffix():
    """No look-alike module files such as checkpoint/checkpointing or embed/embedded, anywhere in
    the package (a subpackage is a namespace: `training/` beside the `train` command is meant)."""
    stems = sorted({path.stem for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"})
    pairs = [(a, b) for a in stems for b in stems if a != b and b.startswith(a)]
    assert not pairs, f"module names that differ only by a suffix: {pairs}"
