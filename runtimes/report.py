"""The verification report: per head and output, max-abs, max-rel and the worst index (never a
mean, which can hide a bad element), per-layer hidden-state drift and the first stage where
the sides part, prediction agreement and the float16 audit; rendered as a table, JSON or
Markdown (``REPORT_FORMATS``, by file extension).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from electra_bridge.schemas import SchemaError

from .precision import FLOAT16_MAX, Agreement, Peak


#: why a report has no drift table, and the fix for the one artifact that can add it
NO_DRIFT = "a side does not expose hidden states; an ONNX export has them with --hidden-states"


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
    """One head's comparison. When both sides expose hidden states, ``drift`` holds one Diff per
    state (embeddings, layer 0 .. L-1) and each gates ``ok`` like an output does: the last one is
    ``base``'s ``last_hidden_state``, so every head's report compares it, and a change that moves
    the hidden states but not (yet) the head's logits fails as well."""

    head: str
    outputs: list[Diff]
    #: hidden-state drift: "embeddings", "layer 0", ..., each a Diff
    drift: list[Diff] = field(default_factory=list)
    #: prediction agreement per output (empty for ``base``)
    agreement: list[Agreement] = field(default_factory=list)
    #: the gate on agreement (None: reported, not gated)
    min_agreement: float | None = None
    #: the float16 overflow audit of the reference, per stage (empty when no side is float16)
    peaks: list[Peak] = field(default_factory=list)

    @property
    def within_tolerance(self) -> bool:
        return all(d.ok for d in self.outputs)

    @property
    def rows(self) -> list[Diff]:
        """The outputs, then (when the sides expose hidden states and the head is not ``base``) the
        last hidden state as ``base:last_hidden_state``: the rows of the output tables."""
        extra = []
        if self.drift and "last_hidden_state" not in {d.name for d in self.outputs}:
            last = self.drift[-1]
            extra = [Diff("base:last_hidden_state", last.shape, last.max_abs, last.max_rel, last.worst_index, last.ok)]
        return [*self.outputs, *extra]

    @property
    def drift_ok(self) -> bool:
        """Every hidden state within tolerance (True when no side exposes them)."""
        return all(d.ok for d in self.drift)

    @property
    def agreement_ok(self) -> bool:
        return self.min_agreement is None or all(g.fraction >= self.min_agreement for g in self.agreement)

    @property
    def overflow(self) -> Peak | None:
        """The first stage whose activations do not fit float16, or None."""
        return next((p for p in self.peaks if not p.ok), None)

    @property
    def ok(self) -> bool:
        return self.within_tolerance and self.drift_ok and self.agreement_ok and self.overflow is None

    @property
    def head_diff(self) -> Diff:
        """The head's outputs as one drift stage, named "head": the worst of them."""
        worst = max(self.outputs, key=lambda d: d.max_abs)
        return Diff("head", worst.shape, worst.max_abs, max(d.max_rel for d in self.outputs), worst.worst_index,
                    self.within_tolerance)

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
    #: the agreement gate (``--min-agreement``), or None
    min_agreement: float | None = None
    #: wall seconds the verification took (both sides' loads and runs and the comparison), set by its caller
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.heads) and all(h.ok for h in self.heads)

    @property
    def overflow(self) -> tuple[str, Peak] | None:
        """(head, stage peak) of the first float16 overflow found, or None."""
        return next(((h.head, h.overflow) for h in self.heads if h.overflow), None)

    @property
    def disagreement(self) -> tuple[str, Agreement] | None:
        """(head, agreement line) of the first head below ``min_agreement``, or None."""
        for h in self.heads:
            for g in h.agreement:
                if self.min_agreement is not None and g.fraction < self.min_agreement:
                    return h.head, g
        return None

    def problem(self) -> str | None:
        """One line naming why the report fails beyond tolerance: an overflow or a low agreement."""
        if self.overflow:
            head, peak = self.overflow
            return (f"float16 overflow at {peak.stage} (head {head}): max |activation| {peak.max_abs:.4g} > "
                    f"{peak.limit:g}")
        if self.disagreement:
            head, g = self.disagreement
            return f"{head} {g.output} agreement {g.fraction:.4f} < --min-agreement {self.min_agreement:g}"
        return None

    @property
    def first_divergence(self) -> str | None:
        """The earliest stage any head leaves tolerance at (drift order: embeddings, layers, head)."""
        found = [h.first_divergence for h in self.heads if h.first_divergence]
        order = {d.name: i for h in self.heads for i, d in enumerate(h.drift)}
        return min(found, key=lambda name: order.get(name, len(order))) if found else None

    def to_dict(self) -> dict:
        """The JSON report. Top level: a, b, ok, atol, rtol, first_divergence, source, inputs (name ->
        shape), min_agreement (the gate or null), problem (why it fails beyond tolerance: a float16
        overflow or a low agreement, else null), seconds (the verification's wall time, or null), heads.
        Per head: ok, first_divergence, outputs and
        hidden_state_drift (name -> shape, max_abs, max_rel, worst_index, ok), agreement (output ->
        kind "top-1" | "replaced-token" | "start" | "end", agree, total, fraction, disagree (positions,
        at most MAX_LISTED), disagree_count; {} for base), and when a side is float16
        overflow_audit (stage -> max_abs, limit, headroom, ok)."""
        return {
            "a": self.a, "b": self.b, "ok": self.ok, "atol": self.atol, "rtol": self.rtol,
            "first_divergence": self.first_divergence, "source": self.source, "inputs": self.inputs,
            "heads": {
                h.head: {
                    "ok": h.ok,
                    "first_divergence": h.first_divergence,
                    "outputs": {d.name: _diff_dict(d) for d in h.outputs},
                    "hidden_state_drift": {d.name: _diff_dict(d) for d in h.drift},
                    "agreement": {g.output: _agreement_dict(g) for g in h.agreement},
                    **({"overflow_audit": {p.stage: {"max_abs": p.max_abs, "limit": p.limit,
                                                     "headroom": p.headroom, "ok": p.ok} for p in h.peaks}}
                       if h.peaks else {}),
                }
                for h in self.heads
            },
            "min_agreement": self.min_agreement,
            "problem": self.problem(),
            "seconds": self.seconds,
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
        lines = [f"{'head':<24} {'output':<22} {'max_abs':>10} {'max_rel':>10}  {'worst index':<14} result"]
        for h in self.heads:
            for d in h.rows:
                lines.append(f"{h.head:<24} {d.name:<22} {d.max_abs:>10.2e} {d.max_rel:>10.2e}  "
                             f"{str(list(d.worst_index)):<14} {'ok' if d.ok else 'MISMATCH'}")
        agreeing = [(h, g) for h in self.heads for g in h.agreement]
        if agreeing:
            gate = f" (gate >= {self.min_agreement:g})" if self.min_agreement is not None else ""
            lines += ["", f"agreement{gate}"]
            for h, g in agreeing:
                low = self.min_agreement is not None and g.fraction < self.min_agreement
                lines.append(f"{h.head:<24} {g.output:<22} {g.text()}{'  LOW' if low else ''}")
        audited = [h for h in self.heads if h.peaks]
        if audited:
            lines += ["", f"float16 audit (max |activation| in float32, limit {FLOAT16_MAX:g}; headroom = limit/max)"]
            for p in audited[0].peaks:
                lines.append(f"{p.stage:<24} {p.max_abs:>10.3g}  headroom {p.headroom:>8.3g}  {'ok' if p.ok else 'OVERFLOW'}")
        rows = self.drift_rows()
        if rows:
            heads = [h.head for h in self.heads if h.drift]
            width = max(12, *(len(h) + 2 for h in heads))
            lines += ["", f"{'drift (max_abs)':<18}" + "".join(f"{h:>{width}}" for h in heads)]
            for name, diffs in rows:
                lines.append(f"{name:<18}" + "".join(f"{_mark(d) if d else '-':>{width}}" for d in diffs))
        elif self.heads:
            lines += ["", f"drift: not available ({NO_DRIFT})"]
        if self.first_divergence:
            lines.append(f"first divergence: {self.first_divergence}")
        if self.problem():
            lines.append(self.problem())
        lines.append(f"inputs: {self.source}")
        lines.append(f"tolerance: |a-b| <= {self.atol:g} + {self.rtol:g}*|b|  ->  {'EQUAL' if self.ok else 'NOT EQUAL'}")
        if self.seconds is not None:
            lines.append(f"verified in {self.seconds:.2f} s")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = ["| head | output | max_abs | max_rel | worst index | result |", "|---|---|---|---|---|---|"]
        for h in self.heads:
            for d in h.rows:
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
            drift = ["", f"Drift per layer: not available ({NO_DRIFT})."]
        agreement = ["", "## Prediction agreement", "", "| head | output | kind | agree | of | fraction |",
                     "|---|---|---|---|---|---|"]
        for h in self.heads:
            for g in h.agreement:
                low = self.min_agreement is not None and g.fraction < self.min_agreement
                frac = f"{g.fraction:.4f}"
                agreement.append(f"| {h.head} | {g.output} | {g.kind} | {g.agree} | {g.total} | "
                                 f"{f'**{frac}**' if low else frac} |")
        if len(agreement) == 5:
            agreement = []
        audit: list[str] = []
        audited = [h for h in self.heads if h.peaks]
        if audited:
            audit = ["", f"## float16 audit (max abs activation in float32; limit {FLOAT16_MAX:g})", "",
                     "| stage | max_abs | headroom | result |", "|---|---|---|---|"]
            audit += [f"| {p.stage} | {p.max_abs:.3g} | {p.headroom:.3g} | {'ok' if p.ok else '**overflow**'} |"
                      for p in audited[0].peaks]
        verdict = "EQUAL" if self.ok else "NOT EQUAL"
        first = [f"- first divergence: **{self.first_divergence}**"] if self.first_divergence else []
        first += [f"- {self.problem()}"] if self.problem() else []
        first += [f"- agreement gate: >= {self.min_agreement:g}"] if self.min_agreement is not None else []
        return "\n".join([f"# verify: {verdict}", "", f"- A: `{self.a}`", f"- B: `{self.b}`",
                          f"- inputs: {self.source}", f"- tolerance: |a-b| <= {self.atol:g} + {self.rtol:g}*|b|",
                          *first, *([f"- verified in {self.seconds:.2f} s"] if self.seconds is not None else []),
                          "", "## Outputs", "", *rows, *agreement, *audit, *drift, ""])

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


def _agreement_dict(g: Agreement) -> dict:
    return {"kind": g.kind, "agree": g.agree, "total": g.total, "fraction": g.fraction,
            "disagree": [list(i) for i in g.disagree], "disagree_count": g.total - g.agree}
