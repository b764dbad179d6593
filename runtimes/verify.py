"""verify: run two runners on the same batch and compare every output of every common head.

An element passes when ``|a - b| <= atol + rtol * |b|`` (b is the reference side).
Reports give, per head and output, max-abs diff, max-rel diff (|a-b| / |b| over elements
with b != 0) and the worst index -- never a mean, which can hide a bad element -- plus
per-layer hidden-state drift and the first layer where the sides part.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from electra_bridge.schemas import SchemaError

from .probe import probe_batch
from .runner import Runner

#: (runtime, dtype) -> (atol, rtol); a pair is judged by the looser of its two sides.
#: float32 CPU kernels of different frameworks agree to ~1e-6 on the tiny fixtures (tests/test_registry.py);
#: fused ONNX Runtime kernels (attention, LayerNorm, GELU) reorder sums, yet measured <= 1.2e-6 on the fixtures
#: and <= 5.1e-6 at electra-base size, so they share the float32 row (a 1e-4 row let a perturbed layer pass).
TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    ("numpy", "float32"): (1e-5, 1e-4),
    ("torch", "float32"): (1e-5, 1e-4),
    ("tf", "float32"): (1e-5, 1e-4),
    ("jax", "float32"): (1e-5, 1e-4),
    ("torchscript", "float32"): (1e-5, 1e-4),
    ("torch-export", "float32"): (1e-5, 1e-4),
    ("onnxruntime", "float32"): (1e-5, 1e-4),
    ("onnxruntime-optimized", "float32"): (1e-5, 1e-4),
    # dynamic int8 (onnx --quantize int8): measured max-abs <= 0.047 on the fixtures, 0.008 on a random
    # electra-base; a quantized graph that lost its padding mask measured 0.116, so 0.5 would hide it
    ("onnxruntime", "int8"): (1e-1, 1e-1),
}
DEFAULT_TOLERANCE_BY_DTYPE = {"float32": (1e-5, 1e-4), "float16": (1e-2, 1e-2), "int8": (5e-1, 5e-1)}


def tolerance(runtime: str, dtype: str) -> tuple[float, float]:
    return TOLERANCES.get((runtime, dtype), DEFAULT_TOLERANCE_BY_DTYPE.get(dtype, (1e-5, 1e-4)))


def pair_tolerance(a: Runner, b: Runner) -> tuple[float, float]:
    ta, tb = tolerance(a.runtime, a.dtype), tolerance(b.runtime, b.dtype)
    return max(ta[0], tb[0]), max(ta[1], tb[1])


@dataclass(frozen=True)
class Diff:
    """How far one array is from its reference."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    worst_index: tuple[int, ...]
    ok: bool


def diff(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> Diff:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return Diff(name, tuple(a.shape), float("inf"), float("inf"), (), False)
    if a.size == 0:
        return Diff(name, tuple(a.shape), 0.0, 0.0, (), True)
    err = np.abs(a - b)
    err = np.where(np.isnan(a) & np.isnan(b), 0.0, np.where(np.isnan(err), np.inf, err))
    ref = np.abs(b)
    rel = np.divide(err, ref, out=np.zeros_like(err), where=ref > 0)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), err.shape))
    ok = bool(np.all(err <= atol + rtol * ref))
    return Diff(name, tuple(a.shape), float(err.max()), float(rel.max()), worst, ok)


@dataclass
class HeadReport:
    head: str
    outputs: list[Diff]
    #: hidden-state drift: "embeddings", "layer 0", ..., each a Diff
    drift: list[Diff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.outputs)

    @property
    def head_diff(self) -> Diff:
        """The head's outputs as one drift stage, named "head": the worst of them."""
        worst = max(self.outputs, key=lambda d: d.max_abs)
        return Diff("head", worst.shape, worst.max_abs, max(d.max_rel for d in self.outputs), worst.worst_index,
                    self.ok)

    @property
    def stages(self) -> list[Diff]:
        """The drift table: embeddings, each layer, then the head (empty when no side exposes hidden states)."""
        return [*self.drift, self.head_diff] if self.drift else []

    @property
    def first_divergence(self) -> str | None:
        """Name of the first hidden state (or output) out of tolerance, or None."""
        for d in (*self.drift, *self.outputs):
            if not d.ok:
                return d.name
        return None


def _mark(d: Diff) -> str:
    return f"{d.max_abs:.2e}{' ' if d.ok else '!'}"


@dataclass
class Report:
    a: str
    b: str
    atol: float
    rtol: float
    heads: list[HeadReport]
    inputs: dict[str, list[int]] = field(default_factory=dict)   # input name -> shape
    #: what the inputs were: "probe batch (seed 0)", "text (3 rows)", "file inputs.npz"
    source: str = "probe batch (seed 0)"

    @property
    def ok(self) -> bool:
        return bool(self.heads) and all(h.ok for h in self.heads)

    @property
    def first_divergence(self) -> str | None:
        """The earliest stage any head leaves tolerance at (drift order: embeddings, layers, head)."""
        found = [h.first_divergence for h in self.heads if h.first_divergence]
        order = {d.name: i for h in self.heads for i, d in enumerate(h.drift)}
        return min(found, key=lambda name: order.get(name, len(order))) if found else None

    def to_dict(self) -> dict:
        return {
            "a": self.a, "b": self.b, "ok": self.ok, "atol": self.atol, "rtol": self.rtol,
            "first_divergence": self.first_divergence, "source": self.source, "inputs": self.inputs,
            "heads": {
                h.head: {
                    "ok": h.ok,
                    "first_divergence": h.first_divergence,
                    "outputs": {d.name: _diff_dict(d) for d in h.outputs},
                    "hidden_state_drift": {d.name: _diff_dict(d) for d in h.drift},
                }
                for h in self.heads
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def drift_rows(self) -> list[tuple[str, list[Diff | None]]]:
        """(stage, one Diff per head or None) for every stage any head has, in order; heads side by side."""
        with_drift = [h for h in self.heads if h.drift]
        names = list(dict.fromkeys(d.name for h in with_drift for d in h.stages))
        by_head = [{d.name: d for d in h.stages} for h in with_drift]
        return [(name, [stages.get(name) for stages in by_head]) for name in names]

    def table(self) -> str:
        """Plain text: one line per head output, then the per-layer drift (max_abs, ``!`` = out of tolerance)."""
        lines = [f"{'head':<24} {'output':<18} {'max_abs':>10} {'max_rel':>10}  {'worst index':<14} result"]
        for h in self.heads:
            for d in h.outputs:
                lines.append(f"{h.head:<24} {d.name:<18} {d.max_abs:>10.2e} {d.max_rel:>10.2e}  "
                             f"{str(list(d.worst_index)):<14} {'ok' if d.ok else 'MISMATCH'}")
        rows = self.drift_rows()
        if rows:
            heads = [h.head for h in self.heads if h.drift]
            width = max(12, *(len(h) + 2 for h in heads))
            lines += ["", f"{'drift (max_abs)':<18}" + "".join(f"{h:>{width}}" for h in heads)]
            for name, diffs in rows:
                lines.append(f"{name:<18}" + "".join(f"{_mark(d) if d else '-':>{width}}" for d in diffs))
        elif self.heads:
            lines += ["", "drift: not available (a side does not expose hidden states)"]
        if self.first_divergence:
            lines.append(f"first divergence: {self.first_divergence}")
        lines.append(f"inputs: {self.source}")
        lines.append(f"tolerance: |a-b| <= {self.atol:g} + {self.rtol:g}*|b|  ->  {'EQUAL' if self.ok else 'NOT EQUAL'}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = ["| head | output | max_abs | max_rel | worst index | result |", "|---|---|---|---|---|---|"]
        for h in self.heads:
            for d in h.outputs:
                rows.append(f"| {h.head} | {d.name} | {d.max_abs:.2e} | {d.max_rel:.2e} | {list(d.worst_index)} | "
                            f"{'ok' if d.ok else '**mismatch**'} |")
        drift: list[str] = []
        heads = [h.head for h in self.heads if h.drift]
        if heads:
            drift = ["", "## Drift per layer (max_abs; **bold** = out of tolerance)", "",
                     "| stage | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
            for name, diffs in self.drift_rows():
                cells = ["-" if d is None else (f"{d.max_abs:.2e}" if d.ok else f"**{d.max_abs:.2e}**") for d in diffs]
                drift.append(f"| {name} | " + " | ".join(cells) + " |")
        else:
            drift = ["", "Drift per layer: not available (a side does not expose hidden states)."]
        verdict = "EQUAL" if self.ok else "NOT EQUAL"
        first = [f"- first divergence: **{self.first_divergence}**"] if self.first_divergence else []
        return "\n".join([f"# verify: {verdict}", "", f"- A: `{self.a}`", f"- B: `{self.b}`",
                          f"- inputs: {self.source}", f"- tolerance: |a-b| <= {self.atol:g} + {self.rtol:g}*|b|",
                          *first, "", "## Outputs", "", *rows, *drift, ""])

    def write(self, path) -> None:
        """Write the report as JSON (``.json``) or Markdown (``.md``), chosen by the extension."""
        path = Path(path)
        render = REPORT_FORMATS.get(path.suffix.lower())
        if render is None:
            raise SchemaError(f"report {path}: unknown extension {path.suffix!r}; use {', '.join(REPORT_FORMATS)}")
        path.write_text(render(self) + "\n", encoding="utf-8")


#: report file extension -> renderer
REPORT_FORMATS: dict[str, Callable[[Report], str]] = {
    ".json": Report.to_json, ".md": Report.to_markdown, ".markdown": Report.to_markdown,
}


def _diff_dict(d: Diff) -> dict:
    out = asdict(d)
    out.pop("name")
    out["shape"], out["worst_index"] = list(d.shape), list(d.worst_index)
    return out


def _state_names(n: int) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(n - 1)]


def compare(a: Runner, b: Runner, *, heads: Iterable[str] | None = None, atol: float | None = None,
            rtol: float | None = None, batch_for: Callable[[str], dict] | None = None) -> Report:
    """Compare every output of every head both runners have (or ``heads``), B as the reference.

    ``batch_for(head)`` gives the inputs (default: the standard probe batch for a's config).
    """
    common = [h for h in a.heads if h in b.heads]
    chosen = list(heads) if heads is not None else common
    unknown = [h for h in chosen if h not in common]
    if unknown or not chosen:
        raise SchemaError(f"no common head to compare: {a.name} has {', '.join(a.heads)}; {b.name} has "
                          f"{', '.join(b.heads)}" + (f"; asked for {', '.join(unknown)}" if unknown else ""))
    # The probe batch indexes a's tables; b must accept the same ids, or the comparison is meaningless.
    limits = ("vocab_size", "type_vocab_size", "max_position_embeddings")
    differ = [f"{k} {getattr(a.config, k)} vs {getattr(b.config, k)}" for k in limits
              if getattr(a.config, k) != getattr(b.config, k)]
    if differ and batch_for is None:
        raise SchemaError(f"{a.name} and {b.name} cannot take the same inputs: {', '.join(differ)}")
    default_atol, default_rtol = pair_tolerance(a, b)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    batch_for = batch_for or (lambda head: probe_batch(a.config, head))
    batches = {head: batch_for(head) for head in chosen}
    shapes = {f"{head}:{k}": list(v.shape) for head, batch in batches.items() for k, v in batch.items()}
    # One side at a time, releasing its weights before the other runs: peak memory is one model.
    results = []
    for runner in (a, b):
        results.append({head: runner.run(head, batches[head]) for head in chosen})
        runner.release()
    reports = []
    for head in chosen:
        ra, rb = results[0][head], results[1][head]
        missing = sorted(set(rb.outputs) ^ set(ra.outputs))
        if missing:
            raise SchemaError(f"head {head}: outputs differ by name between the sides: {', '.join(missing)}")
        outputs = [diff(name, ra.outputs[name], rb.outputs[name], atol, rtol) for name in rb.outputs]
        drift = []
        if ra.hidden_states and len(ra.hidden_states) == len(rb.hidden_states):
            drift = [diff(n, x, y, atol, rtol)
                     for n, x, y in zip(_state_names(len(rb.hidden_states)), ra.hidden_states, rb.hidden_states)]
        reports.append(HeadReport(head, outputs, drift))
    return Report(a.name, b.name, atol, rtol, reports, shapes)
