"""Key maps between PyTorch state dicts and our flat parameter paths.

A model's map is a list of rules like
    ("model.layers.*.self_attn.q_proj.weight", "layers.*.self_attn.q_proj.kernel", transpose)
where `*` stands for a layer index. The same rules drive both directions, so an import followed
by an export is the identity by construction, and tests check it is bit-exact.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np

from mats_jax.convert.errors import ConversionError

Transform = Callable[[np.ndarray], np.ndarray]


def identity(x: np.ndarray) -> np.ndarray:
    return x


def transpose(x: np.ndarray) -> np.ndarray:
    """torch Linear [out, in] <-> our kernel [in, out] (its own inverse)."""
    return np.ascontiguousarray(x.T)


def _regex(pattern: str) -> re.Pattern:
    return re.compile(re.escape(pattern).replace(r"\*", r"(\d+)") + r"\Z")


@dataclasses.dataclass(frozen=True)
class Rule:
    torch: str
    flax: str
    transform: Transform = identity

    def match(self, key: str, to_flax: bool) -> str | None:
        src, dst = (self.torch, self.flax) if to_flax else (self.flax, self.torch)
        m = _regex(src).match(key)
        if m is None:
            return None
        out = dst
        for index in m.groups():
            out = out.replace("*", index, 1)
        return out


@dataclasses.dataclass(frozen=True)
class KeyMap:
    """Rules plus torch keys that are known non-parameters (buffers) and are skipped on import."""

    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()

    def nest(self, flax_prefix: str) -> "KeyMap":
        """The same map for a model held at `flax_prefix` inside a bigger one (e.g. "llm.")."""
        rules = tuple(dataclasses.replace(r, flax=flax_prefix + r.flax) for r in self.rules)
        return KeyMap(rules, self.ignore)

    def __add__(self, other: "KeyMap") -> "KeyMap":
        return KeyMap(self.rules + other.rules, self.ignore + other.ignore)

    def to_flax(self, tensors: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        """Rename and transform; any torch key that no rule or ignore pattern covers is an error."""
        ignored = [_regex(p) for p in self.ignore]
        out = {}
        for key, value in tensors.items():
            if any(p.match(key) for p in ignored):
                continue
            target, rule = self._find(key, to_flax=True)
            if target is None:
                raise ConversionError(f"{source}: unexpected key {key!r}")
            out[target] = rule.transform(np.asarray(value))
        return out

    def to_torch(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for key, value in params.items():
            target, rule = self._find(key, to_flax=False)
            if target is None:
                raise ConversionError(f"no torch name for parameter {key!r}")
            out[target] = rule.transform(np.asarray(value))
        return out

    def _find(self, key: str, to_flax: bool) -> tuple[str | None, Rule | None]:
        for rule in self.rules:
            target = rule.match(key, to_flax)
            if target is not None:
                return target, rule
        return None, None
