"""``electra-bridge demo``: the toolkit's main job, end to end, on an embedded model.

1. Source: the bundled fixture ``fixtures/hf/<head>`` (the package is installed from the
   repository, so it sits beside this folder); without it, a tiny random model generated
   in memory (seeded) with a generated WordPiece vocabulary.
2. A chain of checkpoint formats (safetensors -> h5 -> msgpack -> tf1 -> safetensors):
   each hop converts the previous result and is verified against it. A hop is skipped,
   with a one-line reason, when its format is not registered, is read-only, cannot hold
   the head, or needs a framework that is not installed; the chain continues from the
   last good folder.
3. Every artifact format (onnx, torchscript, torch-export) exported from the source and
   verified against it.
4. Round trip: the last checkpoint of the chain verified against the source; and each
   framework's own runtime (torch, tf, jax) running the hop written for it, against the
   numpy reference on the source.
5. The CI check itself: a copy of the source with one weight of the last layer nudged
   must be caught, with that layer named as the first divergence.

Writes into ``out``: each hop's folder, ``report.json``, ``report.md`` and ``drift.png``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from electra_bridge.runtimes import Report, compare
from electra_bridge.schemas import (
    BridgeError, Checkpoint, ElectraConfig, MissingDependencyError, SchemaError, config_for_head, get_head, head_shapes,
)

from . import api
from .formats import FORMATS, get_format

log = logging.getLogger(__name__)

#: checkpoint formats, in hop order; the last hop returns to the start for a round trip
CHAIN = ("safetensors", "h5", "msgpack", "keras", "tf1", "safetensors")
#: deployment artifacts, each exported from the source
ARTIFACTS = ("onnx", "torchscript", "torch-export")
#: export options: the ONNX graph carries its hidden states, so its hop is compared layer by layer too
ARTIFACT_OPTIONS = {"onnx": {"hidden_states": True}}
#: the framework each checkpoint format is made for: its hop is also run there, against the numpy source
NATIVE_RUNTIME = {"safetensors": "torch", "h5": "tf", "msgpack": "jax", "tf1": "tf"}
#: what `--out` must contain for the demo to replace it (it never deletes a folder it did not write)
MARKER = ".electra-bridge-demo"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf"
PERTURBATION = 1e-2


@dataclass
class Hop:
    name: str                 # "1", "2", ..., "artifact", "round trip", "perturbed"
    source: str               # what it was made from / compared to
    fmt: str
    head: str
    result: str               # "ok", "MISMATCH", "skipped", "error", "caught at <stage>", "MISSED"
    seconds: float = 0.0
    reason: str = ""
    path: Path | None = None
    report: Report | None = None

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "skipped") or self.result.startswith("caught")

    def main_diff(self):
        """(max_abs, max_rel) over the outputs of the demo's head (None when there is no report)."""
        if self.report is None:
            return None, None
        diffs = [d for h in self.report.heads if h.head == self.head for d in h.outputs] or \
                [d for h in self.report.heads for d in h.outputs]
        return max(d.max_abs for d in diffs), max(d.max_rel for d in diffs)

    def to_dict(self) -> dict:
        max_abs, max_rel = self.main_diff()
        return {"hop": self.name, "from": self.source, "format": self.fmt, "head": self.head, "result": self.result,
                "max_abs": max_abs, "max_rel": max_rel, "seconds": round(self.seconds, 3), "reason": self.reason,
                "path": str(self.path) if self.path else None,
                "report": self.report.to_dict() if self.report else None}


@dataclass
class DemoResult:
    out: Path
    source: str
    hops: list[Hop]
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hops)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "source": self.source, "ok": self.ok, "hops": [h.to_dict() for h in self.hops],
                "files": [str(p) for p in self.files]}

    def table(self) -> str:
        w = max(6, *(len(h.source) for h in self.hops))
        hw = max(12, *(len(h.head) for h in self.hops))
        lines = [(f"{'hop':<11} {'from':<{w}} {'format':<18} {'head':<{hw}} {'max_abs':>9} {'max_rel':>9}  "
                  f"{'result':<18} {'seconds':>7}")]
        for h in self.hops:
            max_abs, max_rel = h.main_diff()
            lines.append(f"{h.name:<11} {h.source:<{w}} {h.fmt:<18} {h.head:<{hw}} {_num(max_abs):>9} "
                         f"{_num(max_rel):>9}  {h.result:<18} {h.seconds:>7.2f}"
                         + (f"  ({h.reason})" if h.reason else ""))
        lines.append(f"source: {self.source}  ->  {'ALL HOPS VERIFIED' if self.ok else 'SOME HOPS FAILED'}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = ["| hop | from | format | head | max_abs | max_rel | result | seconds |", "|---|" * 1 + "---|" * 7]
        for h in self.hops:
            max_abs, max_rel = h.main_diff()
            result = h.result + (f" ({h.reason})" if h.reason else "")
            rows.append(f"| {h.name} | {h.source} | {h.fmt} | {h.head} | {_num(max_abs)} | {_num(max_rel)} | "
                        f"{result} | {h.seconds:.2f} |")
        details = [f"\n<details><summary>hop {h.name}: {h.fmt}</summary>\n\n{h.report.to_markdown()}\n</details>"
                   for h in self.hops if h.report is not None]
        return "\n".join([f"# electra-bridge demo: {'all hops verified' if self.ok else 'some hops failed'}", "",
                          f"Source: `{self.source}`", "", *rows, *details, ""])


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}"


# ---- the embedded model --------------------------------------------------------------------------

def _generated_source(folder: Path, head: str, seed: int = 0) -> Path:
    """A tiny random ELECTRA (E 16 != H 32, 2 layers) with a generated vocabulary, written as safetensors."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of", "and", "to", "in", "is",
                                "it", "electra", "model", "token", "check", *letters, *(f"##{c}" for c in letters)]))
    cfg = config_for_head(ElectraConfig(vocab_size=len(words), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=37, max_position_embeddings=40), head)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in head_shapes(cfg, head).items():
        base = 1.0 if name.endswith("LayerNorm.weight") else 0.0  # LayerNorm scales near one, like a trained model
        tensors[name] = (base + rng.normal(0.0, 0.1, size=shape)).astype(np.float32)
    ckpt = Checkpoint(cfg, head, tensors, {"vocab.txt": ("\n".join(words) + "\n").encode()},
                      {"format": "generated", "path": "generated"}).validate("generated demo model")
    return api.write(ckpt, folder, "safetensors")


def _source(out: Path, head: str) -> tuple[Path, str]:
    fixture = FIXTURES / head
    if (fixture / "model.safetensors").is_file():
        return fixture, f"bundled fixture fixtures/hf/{head}"
    return _generated_source(out / "00-source", head), "tiny random model (seed 0, generated vocabulary)"


# ---- hops ------------------------------------------------------------------------------------------

def _unavailable(fmt: str, kind: str) -> str | None:
    if fmt not in FORMATS:
        return f"{fmt} is not registered in this installation"
    spec = get_format(fmt)
    if spec.kind != kind:
        return f"{fmt} is a {spec.kind} format here"
    return None


def _convert(name: str, src: Path, src_fmt: str, src_label: str, out: Path, fmt: str, head: str,
             runtime: str) -> Hop:
    start = time.perf_counter()
    try:
        result = api.convert(src, out, fmt, fmt=src_fmt, head=head, runtime=runtime, force=True,
                             write_options=ARTIFACT_OPTIONS.get(fmt))
        return Hop(name, src_label, fmt, head, "ok", time.perf_counter() - start, path=out, report=result.report)
    except api.VerificationError as exc:
        return Hop(name, src_label, fmt, head, "MISMATCH", time.perf_counter() - start, report=exc.report)
    except (MissingDependencyError, SchemaError) as exc:   # framework missing, or the format cannot hold the head
        return Hop(name, src_label, fmt, head, "skipped", time.perf_counter() - start, _first_line(exc))
    except BridgeError as exc:
        return Hop(name, src_label, fmt, head, "error", time.perf_counter() - start, _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _native(hop: Hop, source: Path, head: str, rt: str, reference: str) -> Hop:
    """Run ``hop``'s folder in its own framework and compare with the source under the reference runtime."""
    start = time.perf_counter()
    label = f"hop {hop.name} {hop.fmt}"
    try:
        a = api.open_runner(hop.path, hop.fmt, runtime=rt, head=head)
        a.name = f"{hop.path} [{rt}]"
        b = api.open_runner(source, "safetensors", runtime=reference, head=head)
        report = compare(a, b)
    except (MissingDependencyError, SchemaError) as exc:
        return Hop("runtime", label, f"{hop.fmt}@{rt}", head, "skipped", time.perf_counter() - start, _first_line(exc))
    except BridgeError as exc:
        return Hop("runtime", label, f"{hop.fmt}@{rt}", head, "error", time.perf_counter() - start, _first_line(exc))
    return Hop("runtime", label, f"{hop.fmt}@{rt}", head, "ok" if report.ok else "MISMATCH",
               time.perf_counter() - start, f"{rt} vs {reference} on the source", hop.path, report)


def _perturbed(source: Path, out: Path, head: str, runtime: str) -> Hop:
    """Nudge one weight of the last layer; verify must fail and name that layer first."""
    start = time.perf_counter()
    ckpt = api.read(source, "safetensors")
    layer = ckpt.config.num_hidden_layers - 1
    name = f"encoder.layer.{layer}.attention.self.query.weight"
    weight = np.array(ckpt.array(name), copy=True)
    weight.flat[0] += PERTURBATION
    api.write(ckpt.with_(tensors={**ckpt.tensors, name: weight}), out, "safetensors", force=True)
    report = api.verify(out, source, runtime=runtime)
    expected = f"layer {layer}"
    found = report.first_divergence
    result = f"caught at {found}" if not report.ok and found == expected else "MISSED"
    reason = f"{name} +{PERTURBATION:g}; expected exit 1 naming {expected}"
    return Hop("perturbed", "source", "safetensors", head, result, time.perf_counter() - start, reason, out, report)


def run(out: str | Path = "demo-out", *, head: str | None = None, runtime: str = "numpy",
        echo: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo into ``out`` (replaced only if an earlier demo wrote it) and return every hop."""
    head = head or "pretraining"
    get_head(head)
    out = Path(out)
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise BridgeError(f"{out} exists and was not written by the demo; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by electra-bridge demo; replaced on the next run\n")
    say = echo or (lambda line: None)

    src, label = _source(out, head)
    say(f"source: {label}")
    hops: list[Hop] = []
    prev, prev_fmt, prev_label = src, "safetensors", "source"
    for i, fmt in enumerate(CHAIN, start=1):
        reason = _unavailable(fmt, "checkpoint")
        hop = Hop(str(i), prev_label, fmt, head, "skipped", reason=reason) if reason else \
            _convert(str(i), prev, prev_fmt, prev_label, out / f"{i:02d}-{fmt}", fmt, head, runtime)
        hops.append(hop)
        say(f"hop {hop.name}: {prev_label} -> {fmt}: {hop.result}" + (f" ({hop.reason})" if hop.reason else ""))
        if hop.result == "ok":
            prev, prev_fmt, prev_label = hop.path, fmt, f"hop {i} {fmt}"
    if prev != src:
        start = time.perf_counter()
        try:
            report = api.verify(prev, src, runtime=runtime)
            hops.append(Hop("round trip", "source", prev_fmt, head, "ok" if report.ok else "MISMATCH",
                            time.perf_counter() - start, f"{prev_label} vs source", prev, report))
        except BridgeError as exc:
            hops.append(Hop("round trip", "source", prev_fmt, head, "error", time.perf_counter() - start,
                            _first_line(exc)))
        say(f"round trip: {hops[-1].result}")
    seen: set[str] = set()
    for hop in [h for h in hops if h.result == "ok" and h.fmt in NATIVE_RUNTIME]:
        rt = NATIVE_RUNTIME[hop.fmt]
        if rt in seen or rt == runtime:
            continue
        seen.add(rt)
        hops.append(_native(hop, src, head, rt, runtime))
        say(f"runtime {rt} on {hop.fmt}: {hops[-1].result}" + (f" ({hops[-1].reason})" if hops[-1].reason else ""))
    for fmt in ARTIFACTS:
        reason = _unavailable(fmt, "artifact")
        hop = Hop("artifact", "source", fmt, head, "skipped", reason=reason) if reason else \
            _convert("artifact", src, "safetensors", "source", out / f"artifact-{fmt}", fmt, head, runtime)
        hops.append(hop)
        say(f"artifact {fmt}: {hop.result}" + (f" ({hop.reason})" if hop.reason else ""))
    hops.append(_perturbed(src, out / "perturbed", head, runtime))
    say(f"perturbed copy: {hops[-1].result}")

    result = DemoResult(out, label, hops)
    result.files = _write_outputs(result, out)
    return result


def _write_outputs(result: DemoResult, out: Path) -> list[Path]:
    files = [out / "report.json", out / "report.md"]
    files[0].write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    files[1].write_text(result.to_markdown(), encoding="utf-8")
    try:
        from .plot import plot_series
        stages = {f"{h.name} {h.fmt}": next((x.stages for x in h.report.heads if x.head == h.head), [])
                  for h in result.hops if h.report is not None}
        # bit-exact hops all sit on the floor: one line for them keeps the others readable
        exact = [label for label, st in stages.items() if st and all(d.max_abs == 0 for d in st)]
        series = [(label, st) for label, st in stages.items() if label not in exact]
        if exact:
            names = [h.name for h in result.hops if h.report is not None and f"{h.name} {h.fmt}" in exact]
            series.insert(0, (f"bit-exact: {', '.join(names)}", stages[exact[0]]))
        atol = min((h.report.atol for h in result.hops if h.report is not None), default=1e-5)
        perturbed = next((h for h in result.hops if h.name == "perturbed" and h.report), None)
        first = perturbed.report.first_divergence if perturbed else None
        files.append(plot_series(series, out / "drift.png", atol=atol, first=first,
                                 highlight=f"perturbed {perturbed.fmt}" if perturbed else None,
                                 title="demo: drift per layer of every hop (the perturbed copy must stand out)"))
    except MissingDependencyError as exc:
        log.info("drift.png not written: %s", exc)
    return files
