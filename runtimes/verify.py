"""verify: run two runners on the same batch and compare every output of every common head.

An element passes when ``|a - b| <= atol + rtol * |b|`` (b is the reference side).
Reports give, per head and output, max-abs diff, max-rel diff (|a-b| / |b| over elements
with b != 0) and the worst index -- never a mean, which can hide a bad element -- plus
per-layer hidden-state drift and the first layer where the sides part.

Beside the numbers, each head gets its prediction agreement (``agreement``): the fraction of
compared positions (padding excluded) where both sides predict the same -- top-1 over the
vocabulary or labels, start/end for question answering, the replaced-token decision
(logit > 0) for the discriminator -- with the disagreeing positions. ``min_agreement`` makes
it a gate. When a side is float16, the reference is audited (``activation_peaks``): the
largest |activation| per stage in float32, against float16's 65504.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from electra_bridge.schemas import SchemaError, get_head

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
    # half-precision weights (convert --dtype, or a half checkpoint), judged against the float32 original.
    # Checkpoint runtimes compute in float32 from them, so the error is the weights' rounding: float16
    # measured max-abs <= 2.9e-3 on the fixtures (hidden states included) and 2.1e-3 at electra-base size;
    # the float16 ONNX graph (LayerNorm/softmax/mask in float32) the same, <= 2.1e-3 at base size.
    ("numpy", "float16"): (1e-2, 1e-2),
    ("torch", "float16"): (1e-2, 1e-2),
    ("tf", "float16"): (1e-2, 1e-2),
    ("jax", "float16"): (1e-2, 1e-2),
    ("onnxruntime", "float16"): (1e-2, 1e-2),
    ("onnxruntime-optimized", "float16"): (1e-2, 1e-2),
    # bfloat16 keeps 8 mantissa bits (float16: 11): measured <= 2.4e-2 on the fixtures, 1.4e-2 at base size
    ("numpy", "bfloat16"): (5e-2, 5e-2),
    ("torch", "bfloat16"): (5e-2, 5e-2),
    ("tf", "bfloat16"): (5e-2, 5e-2),
    ("jax", "bfloat16"): (5e-2, 5e-2),
}


def tolerance(runtime: str, dtype: str) -> tuple[float, float]:
    """The table's row; a (runtime, dtype) it lacks takes the loosest row of that dtype (float32's if none)."""
    if (runtime, dtype) in TOLERANCES:
        return TOLERANCES[(runtime, dtype)]
    rows = [v for (_, d), v in TOLERANCES.items() if d == dtype] or [TOLERANCES[("numpy", "float32")]]
    return max(r[0] for r in rows), max(r[1] for r in rows)


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


#: disagreeing positions listed per agreement line in reports (the count is always exact)
MAX_LISTED = 200


@dataclass(frozen=True)
class Agreement:
    """How often A's predictions equal B's for one output: ``agree`` of ``total`` positions.

    ``kind``: "top-1" (argmax over the last axis), "replaced-token" (logit > 0), "start"/"end"
    (argmax over the unpadded positions of a row). ``disagree`` lists the positions (indices
    into the output without its class axis), at most MAX_LISTED of them.
    """

    output: str
    kind: str
    agree: int
    total: int
    disagree: tuple[tuple[int, ...], ...] = ()

    @property
    def fraction(self) -> float:
        return self.agree / self.total if self.total else 1.0

    def text(self) -> str:
        return f"{self.kind} {self.agree}/{self.total} ({100 * self.fraction:.2f}%)"


def _agree(output: str, kind: str, pa: np.ndarray, pb: np.ndarray, keep: np.ndarray) -> Agreement:
    differ = (pa != pb) & keep
    where = [tuple(int(i) for i in idx) for idx in np.argwhere(differ)[:MAX_LISTED]]
    total = int(keep.sum())
    return Agreement(output, kind, total - int(differ.sum()), total, tuple(where))


def agreement(head: str, a: dict[str, np.ndarray], b: dict[str, np.ndarray], batch: dict) -> list[Agreement]:
    """The task-level comparison of ``head``'s outputs (see Agreement); [] for ``base`` (no prediction)."""
    spec = get_head(head)
    mask = np.asarray(batch.get("attention_mask", np.ones_like(batch["input_ids"]))) > 0
    out = []
    for name, symbols in spec.outputs:
        x, y = np.asarray(a[name], np.float32), np.asarray(b[name], np.float32)
        if x.shape != y.shape or name == "last_hidden_state":
            continue
        if head == "pretraining":                                    # [B, S]: replaced or original
            out.append(_agree(name, "replaced-token", x > 0, y > 0, mask))
        elif head == "question-answering":                          # [B, S]: argmax over real tokens
            masked = [np.where(mask, v, -np.inf).argmax(-1) for v in (x, y)]
            out.append(_agree(name, name.removesuffix("_logits"), masked[0], masked[1], np.ones(x.shape[0], bool)))
        elif symbols[1] == "S":                                       # [B, S, V|C]: per real token
            out.append(_agree(name, "top-1", x.argmax(-1), y.argmax(-1), mask))
        else:                                                         # [B, C] / [B, K]: per row
            out.append(_agree(name, "top-1", x.argmax(-1), y.argmax(-1), np.ones(x.shape[0], bool)))
    return out


#: float16's largest finite value: the overflow audit's limit
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Peak:
    """The largest |activation| of one stage ("embeddings", "layer 3 attention", "layer 3 ffn", "head")
    in the float32 reference, against ``limit`` (float16's 65504)."""

    stage: str
    max_abs: float
    limit: float = FLOAT16_MAX

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.limit

    @property
    def headroom(self) -> float:
        """limit / max_abs: > 1 fits; the factor the activations could still grow by."""
        return self.limit / self.max_abs if self.max_abs > 0 else float("inf")


def _stage(param: str) -> str:
    m = re.match(r"encoder\.layer\.(\d+)\.(attention|intermediate|output)\.", param)
    if m:
        return f"layer {m[1]} " + ("attention" if m[2] == "attention" else "ffn")
    return "embeddings" if param.startswith("embeddings") else "head"


def activation_peaks(ckpt, head: str, batch: dict) -> list[Peak]:
    """The float32 reference run of ``ckpt`` with every value float16 would have to hold recorded:
    embedding sums, dense outputs, attention scores and context, residual sums (LayerNorm inputs)
    and the head's logits, grouped by stage. LayerNorm statistics, softmax and the additive
    mask are left out: a float16 export keeps them in float32 (converters/formats/onnx.py)."""
    from .forward import forward
    from .ops_numpy import NumpyOps

    class AuditOps(NumpyOps):
        def __init__(self):
            super().__init__()
            self.names: dict[int, str] = {}
            self.stage, self.peaks, self._means = "embeddings", {}, 0

        def see(self, x):
            x = np.asarray(x)
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), peak if np.isfinite(peak) else np.inf)
            return x

        def enter(self, weight):
            self.stage = _stage(self.names.get(id(weight), "")) if id(weight) in self.names else self.stage

        def take(self, table, ids):
            self.enter(table)
            return self.see(super().take(table, ids))

        def linear(self, x, weight, bias):
            self.enter(weight)
            return self.see(np.matmul(x, np.transpose(weight)) + bias)

        def matmul(self, a, b):
            return self.see(np.matmul(a, b))

        def mean(self, x, axis):
            self._means += 1
            if self._means % 2:          # layer_norm's first mean reads its input; the second, centered**2
                self.see(x)
            return super().mean(x, axis)

    ops = AuditOps()
    params = {}
    for name, tensor in ckpt.tensors.items():
        params[name] = ops.param(tensor)
        ops.names[id(params[name])] = name
    forward(params, ckpt.config, head, {k: ops.inputs(v) for k, v in batch.items()}, ops)
    order = ["embeddings", *(f"layer {i} {part}" for i in range(ckpt.config.num_hidden_layers)
                             for part in ("attention", "ffn")), "head"]
    return [Peak(stage, ops.peaks[stage]) for stage in order if stage in ops.peaks]


@dataclass
class HeadReport:
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
    def agreement_ok(self) -> bool:
        return self.min_agreement is None or all(g.fraction >= self.min_agreement for g in self.agreement)

    @property
    def overflow(self) -> Peak | None:
        """The first stage whose activations do not fit float16, or None."""
        return next((p for p in self.peaks if not p.ok), None)

    @property
    def ok(self) -> bool:
        return self.within_tolerance and self.agreement_ok and self.overflow is None

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
        overflow or a low agreement, else null), heads. Per head: ok, first_divergence, outputs and
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
        agreeing = [(h, g) for h in self.heads for g in h.agreement]
        if agreeing:
            gate = f" (gate >= {self.min_agreement:g})" if self.min_agreement is not None else ""
            lines += ["", f"agreement{gate}"]
            for h, g in agreeing:
                low = self.min_agreement is not None and g.fraction < self.min_agreement
                lines.append(f"{h.head:<24} {g.output:<18} {g.text()}{'  LOW' if low else ''}")
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
            lines += ["", "drift: not available (a side does not expose hidden states)"]
        if self.first_divergence:
            lines.append(f"first divergence: {self.first_divergence}")
        if self.problem():
            lines.append(self.problem())
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
                          *first, "", "## Outputs", "", *rows, *agreement, *audit, *drift, ""])

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


def _checkpoint_of(runner):
    """The checkpoint a runner computes from, or None for an artifact runner."""
    try:
        return runner.ckpt
    except AttributeError:
        return None


def _state_names(n: int) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(n - 1)]


def compare(a: Runner, b: Runner, *, heads: Iterable[str] | None = None, atol: float | None = None,
            rtol: float | None = None, batch_for: Callable[[str], dict] | None = None,
            min_agreement: float | None = None) -> Report:
    """Compare every output of every head both runners have (or ``heads``), B as the reference.

    ``batch_for(head)`` gives the inputs (default: the standard probe batch for a's config).
    ``min_agreement`` fails a head whose prediction agreement (any output) is below it. When
    either side is float16 and B is a checkpoint, B is audited for float16 overflow.
    """
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise SchemaError(f"--min-agreement {min_agreement:g}: give a fraction between 0 and 1")
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
        agreed = agreement(head, ra.outputs, rb.outputs, batches[head])
        reference = _checkpoint_of(b)
        audit = "float16" in (a.dtype, b.dtype) and reference is not None
        peaks = activation_peaks(reference, head, batches[head]) if audit else []
        reports.append(HeadReport(head, outputs, drift, agreed, min_agreement, peaks))
    return Report(a.name, b.name, atol, rtol, reports, shapes, min_agreement=min_agreement)
