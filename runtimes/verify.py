"""verify: run two runners on the same batch and compare every output of every common head.

An element passes when ``|a - b| <= atol + rtol * |b|`` (b is the reference side), with
(atol, rtol) from the one ``TOLERANCES`` table. ``compare`` builds the Report
(runtimes/report.py: max-abs, max-rel, worst index, per-layer drift); beside the numbers each
head gets its prediction agreement and, when a side is float16, the overflow audit of the
reference (runtimes/precision.py). ``min_agreement`` makes agreement a gate. A pair with a
float16, bfloat16 or int8 side is run on runtimes/probe.precision_batch (the probe rows plus a
max_position_embeddings-long row and a repeated-token row) unless the caller gives the inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from electra_bridge.schemas import SchemaError

from .precision import activation_peaks, agreement
from .probe import PRECISION_DTYPES, verification_batch
from .report import REPORT_FORMATS, Diff, HeadReport, Report, diff
from .runner import Runner

__all__ = ["REPORT_FORMATS", "TOLERANCES", "Diff", "HeadReport", "Report", "compare", "diff", "pair_tolerance",
           "tolerance"]

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
    # Half torch artifacts (convert --to torchscript|torch-export --dtype): their embeddings, matmuls and GELU
    # round too, not only the weights (LayerNorm/softmax/mask stay float32). On the fixtures, every head, outputs
    # and hidden states, float16 measured max-abs <= 3.9e-3 and bfloat16 <= 3.4e-2 (tests/test_torch_half.py);
    # at electra-base size, every head's outputs, float16 <= 3.9e-3 (4.3e-3 with hidden states) and bfloat16
    # <= 3.2e-2 (bench_precision.py --part heads)
    ("torchscript", "float16"): (1e-2, 1e-2),
    ("torch-export", "float16"): (1e-2, 1e-2),
    ("torchscript", "bfloat16"): (5e-2, 5e-2),
    ("torch-export", "bfloat16"): (5e-2, 5e-2),
    # keras-hub's own ElectraBackbone (from_preset) against the erf reference: it hard-codes the tanh GELU,
    # measured 1.8e-4..2.6e-4 on the fixtures (1.2e-6 with erf swapped in), so this row bounds that known
    # approximation, not float error; a preset read back (hidden_act gelu_new) takes the float32 rows
    ("keras-hub", "float32"): (1e-3, 1e-3),
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

    ``batch_for(head)`` gives the inputs (default: the standard probe batch for a's config; when
    either side is float16, bfloat16 or int8, ``precision_batch``: the probe rows padded to
    max_position_embeddings plus a long row and a repeated-token row, where rounding in long
    softmax sums and saturated attention shows). ``min_agreement`` fails a head whose prediction agreement (any output) is below it. When
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
    source = None
    if batch_for is None:
        reduced = any(r.dtype in PRECISION_DTYPES for r in (a, b))
        source = "probe batch (seed 0)" + (" + precision rows (long, repeated)" if reduced else "")

        def batch_for(head: str) -> dict:
            return verification_batch(a.config, head, reduced)
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
    report = Report(a.name, b.name, atol, rtol, reports, shapes, min_agreement=min_agreement)
    if source is not None:
        report.source = source
    return report
