"""Key maps between PyTorch state dicts and our flat parameter paths.

A model's map is a list of rules like
    Rule("model.layers.*.self_attn.q_proj.weight", "layers.*.self_attn.q_proj.kernel", transpose)
where `*` stands for a layer index. The same rules drive both directions, so an import followed
by an export is the identity by construction, and tests check it is bit-exact. A rule's
`transform` turns the torch array into ours; `inverse` turns ours back (it defaults to
`transform`, which is right for renames and transposes).

`Concat` maps several torch tensors to one of ours: e.g. Hugging Face's separate query/key/value
Linears become one fused qkv kernel (concatenated along the torch `axis`, then `transform`); on
export the array is split back into equal parts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np

from mats_jax.runtime.fileio import ModelFileError

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
    transform: Transform = identity  # torch layout -> ours
    inverse: Transform | None = None  # ours -> torch layout; None: `transform` (self-inverse)

    def to_torch_layout(self, x: np.ndarray) -> np.ndarray:
        return (self.inverse or self.transform)(x)

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
class Concat:
    """Torch tensors `torch[0..n-1]` concatenated along `axis` (torch layout), then `transform`,
    make our `flax` array; on export it is `inverse`-transformed and split into n equal parts."""

    torch: tuple[str, ...]
    flax: str
    axis: int = 0
    transform: Transform = identity
    inverse: Transform | None = None

    def to_torch_layout(self, x: np.ndarray) -> np.ndarray:
        return (self.inverse or self.transform)(x)

    def part(self, key: str) -> int | None:
        """Which of the torch tensors `key` is (None: none of them)."""
        for i, pattern in enumerate(self.torch):
            if _regex(pattern).match(key):
                return i
        return None

    def match(self, key: str, to_flax: bool) -> str | None:
        """to_flax: our name for any of the parts; otherwise the first part's torch name."""
        if to_flax:
            i = self.part(key)
            return None if i is None else Rule(self.torch[i], self.flax).match(key, True)
        return Rule(self.torch[0], self.flax).match(key, False)

    def torch_names(self, flax_key: str) -> list[str] | None:
        names = [Rule(t, self.flax).match(flax_key, False) for t in self.torch]
        return None if names[0] is None else names


@dataclasses.dataclass(frozen=True)
class KeyMap:
    """Rules plus torch keys that are known non-parameters (buffers) and are skipped on import."""

    rules: tuple[Rule | Concat, ...]
    ignore: tuple[str, ...] = ()

    def nest(self, flax_prefix: str) -> KeyMap:
        """The same map for a model held at `flax_prefix` inside a bigger one (e.g. "llm.")."""
        rules = tuple(dataclasses.replace(r, flax=flax_prefix + r.flax) for r in self.rules)
        return KeyMap(rules, self.ignore)

    def __add__(self, other: KeyMap) -> KeyMap:
        return KeyMap(self.rules + other.rules, self.ignore + other.ignore)

    def to_flax(self, tensors: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        """Rename and transform; any torch key that no rule or ignore pattern covers is an error."""
        ignored = [_regex(p) for p in self.ignore]
        out = {}
        parts: dict[str, tuple[Concat, dict[int, np.ndarray]]] = {}  # Concat pieces by target
        for key, value in tensors.items():
            if any(p.match(key) for p in ignored):
                continue
            target, rule = self._find(key, to_flax=True)
            if target is None:
                raise ModelFileError(f"{source}: unexpected key {key!r}")
            if isinstance(rule, Concat):
                parts.setdefault(target, (rule, {}))[1][rule.part(key)] = np.asarray(value)
            else:
                out[target] = rule.transform(np.asarray(value))
        for target, (rule, found) in parts.items():
            if len(found) != len(rule.torch):
                absent = [n for i, n in enumerate(rule.torch_names(target)) if i not in found]
                raise ModelFileError(f"{source}: missing key {absent[0]!r} ({len(absent)} missing)")
            out[target] = rule.transform(
                np.concatenate([found[i] for i in range(len(found))], rule.axis)
            )
        return out

    def to_torch(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for key, value in params.items():
            target, rule = self._find(key, to_flax=False)
            if target is None:
                raise ModelFileError(f"no torch name for parameter {key!r}")
            array = rule.to_torch_layout(np.asarray(value))
            if isinstance(rule, Concat):
                pieces = np.split(array, len(rule.torch), axis=rule.axis)
                out.update(
                    {
                        name: np.ascontiguousarray(piece)
                        for name, piece in zip(rule.torch_names(key), pieces)
                    }
                )
            else:
                out[target] = array
        return out

    def _find(self, key: str, to_flax: bool) -> tuple[str | None, Rule | Concat | None]:
        for rule in self.rules:
            target = rule.match(key, to_flax)
            if target is not None:
                return target, rule
        return None, None
