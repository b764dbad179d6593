"""The engine every format's RULES table runs on.

A format declares ``RULES``: (canonical template, native template, layout) rows with
``{layer}`` the only placeholder, and ``IGNORED``: native-name globs dropped on purpose,
each with its reason. Most formats write their RULES as a module table -- canonical module
path -> native module path -- plus ``Leaves``, how the format names and lays out each
parameter role (kernel, bias, LayerNorm scale and shift, embedding table); ``module_rules``
expands that against the canonical tensor table (schemas/tensors.py ROWS). ``bind`` expands the rules for one config and head into exact
names; ``account`` is the strict check after reading (every native tensor mapped or
ignored, every needed tensor present, every shape right); ``write`` derives the native
side from the same table through each layout's inverse.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from electra_bridge.runtimes import blas
from electra_bridge.schemas import ROWS, ElectraConfig, SchemaError, check_tensors, head_shapes


@dataclass(frozen=True)
class Layout:
    """A reversible storage transform: native array <-> canonical array."""

    name: str
    to_canonical: Callable[[np.ndarray], np.ndarray]
    to_native: Callable[[np.ndarray], np.ndarray]
    native_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


IDENTITY = Layout("identity", lambda a: a, lambda a: a, lambda s: tuple(s))
#: [in, out] kernels (TF, Flax, Google) <-> canonical [out, in], C-contiguous either way: the copy is
#: OpenBLAS's out-of-place transpose where there is one (bit-identical to numpy's strided copy and
#: several times faster: runtimes/blas.py)
TRANSPOSE = Layout("transpose", lambda a: blas.contiguous(a.T), lambda a: blas.contiguous(a.T),
                   lambda s: tuple(reversed(s)))


@dataclass(frozen=True)
class Rule:
    canonical: str
    native: str
    layout: Layout = IDENTITY


@dataclass(frozen=True)
class Leaves:
    """A format's parameter names and layouts by role (schemas.tensors.Row.role), joined to the
    native module path with ``sep``. An empty name means the module path is the tensor's name."""

    sep: str
    kernel: tuple[str, Layout]
    bias: tuple[str, Layout]
    scale: tuple[str, Layout]
    shift: tuple[str, Layout]
    embedding: tuple[str, Layout]
    decoder: tuple[str, Layout]

    def native(self, module: str, role: str) -> tuple[str, Layout]:
        leaf, layout = getattr(self, role)
        return (f"{module}{self.sep}{leaf}" if leaf else module), layout


def module_rules(modules: Iterable[tuple[str, str]], leaves: Leaves) -> tuple[Rule, ...]:
    """One Rule per canonical tensor under each (canonical module, native module) pair, in table order.

    Raises if a canonical module has no tensor in the schema (a typo in a table)."""
    out: list[Rule] = []
    for canonical, native in modules:
        rows = [row for row in ROWS if row.module == canonical]
        if not rows:
            raise SchemaError(f"no canonical tensor lives under module {canonical!r}")
        for row in dict.fromkeys((row.template, row.role) for row in rows):
            name, layout = leaves.native(native, row[1])
            out.append(Rule(row[0], name, layout))
    return tuple(out)


@dataclass(frozen=True)
class Ignored:
    pattern: str  # fnmatch glob over native names
    reason: str


@dataclass(frozen=True)
class Binding:
    canonical: str
    native: str
    layout: Layout
    canonical_shape: tuple[int, ...]

    @property
    def native_shape(self) -> tuple[int, ...]:
        return self.layout.native_shape(self.canonical_shape)


def bind(rules: Iterable[Rule], cfg: ElectraConfig, head: str) -> dict[str, Binding]:
    """Canonical name -> Binding for every tensor ``head`` needs under ``cfg``.

    Raises if a needed tensor has no rule, or a native name would be claimed twice
    (both are bugs in a RULES table, caught by the table-versus-reality tests too).
    """
    shapes = head_shapes(cfg, head)
    layers = range(cfg.num_hidden_layers)
    out: dict[str, Binding] = {}
    for rule in rules:
        for i in (layers if "{layer}" in rule.canonical else (0,)):
            name = rule.canonical.format(layer=i)
            if name in shapes and name not in out:
                out[name] = Binding(name, rule.native.format(layer=i), rule.layout, shapes[name])
    unmapped = sorted(set(shapes) - set(out))
    if unmapped:
        raise SchemaError(f"no rule maps {', '.join(unmapped)} for head {head}")
    natives = [b.native for b in out.values()]
    if len(set(natives)) != len(natives):
        raise SchemaError("a RULES table maps two canonical tensors to the same native name")
    return out


def ignored_reason(name: str, ignored: Iterable[Ignored]) -> str | None:
    for item in ignored:
        if fnmatch.fnmatchcase(name, item.pattern):
            return item.reason
    return None


def account(bindings: Mapping[str, Binding], found: Mapping[str, tuple[int, ...]], ignored: Iterable[Ignored], *,
            source: str, hint: str = "") -> list[str]:
    """Strict accounting of a native file against the bound rules; returns the ignored names.

    Raises one SchemaError listing missing, unexpected and mis-shaped native names, sorted.
    """
    ignored = tuple(ignored)
    expected = {b.native: b.native_shape for b in bindings.values()}
    dropped = sorted(n for n in found if n not in expected and ignored_reason(n, ignored))
    kept = {n: s for n, s in found.items() if n not in dropped}
    check_tensors(expected, kept, source=source, hint=hint)
    return dropped
