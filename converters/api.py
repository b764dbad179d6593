"""The Python API, mirroring the CLI: read, write, convert, verify, inspect.

    from electra_bridge.converters import convert, verify, inspect
    convert("google-ckpt/", "out/", to="safetensors")        # verified, atomic
    report = verify("out/", "model.onnx"); assert report.ok
    report = verify("old/", "new/", text=["a café"], text_pair=["über"], report="r.md", plot="drift.png")
    report.first_divergence                                   # "layer 3", or None when equal

Progress bars (stderr, only on a terminal) are switched off with ``progress.configure(False)``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from electra_bridge.runtimes import CheckpointRunner, Report, Runner, compare
from electra_bridge.runtimes.runner import PrecomputedRunner, Retained, preload
from electra_bridge.runtimes.verify import REPORT_FORMATS
from electra_bridge.schemas import BridgeError, Checkpoint, FormatError, SchemaError, runnable_heads

from . import inputs as user_inputs
from . import model_card
from . import text as text_inputs
from . import tokenizer_assets
from .engine import assets, extras, hf_cache, output, pipeline, progress, provenance
from .engine.format import ArtifactFormat, CheckpointFormat
from .formats import FORMATS, all_formats, get_format

log = logging.getLogger("electra_bridge")


class VerificationError(BridgeError):
    """The written artifact does not compute what its source computes (CLI exit code 1)."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


def located(path: str | Path) -> Path:
    """``path``, or for a Hugging Face cache folder (``models--org--name``) its ``refs/main`` snapshot."""
    return hf_cache.resolve(Path(path))[0]


def detect_format(path: str | Path) -> str:
    """The first registered format whose ``detect`` accepts ``path``."""
    path = located(path)
    if not path.exists() and not Path(f"{path}.index").exists():
        raise FormatError(f"{path} does not exist")
    reasons = []
    for fmt in all_formats():
        try:
            if fmt.detect(path):
                return fmt.name
        except FormatError as exc:   # files of this format that do not make one checkpoint: say why
            reasons.append(exc)
    if reasons:
        raise reasons[0]
    raise FormatError(f"{path}: no known ELECTRA format found (known: {', '.join(FORMATS)})")


def read(path: str | Path, fmt: str | None = None, *, head: str | None = None, **options) -> Checkpoint:
    """Read any checkpoint format into a canonical Checkpoint (options: e.g. net, config)."""
    path = located(path)
    spec = get_format(fmt or detect_format(path))
    if not isinstance(spec, CheckpointFormat):
        raise FormatError(f"{path} is a {spec.name} artifact: it can be run and verified, not read back as a checkpoint")
    return pipeline.read(spec, Path(path), head=head, **options)


def open_runner(path: str | Path, fmt: str | None = None, *, runtime: str = "numpy", head: str | None = None,
                **options) -> Runner:
    """Something that runs ``path``: a checkpoint through ``runtime``, an artifact through its own runner."""
    path = located(path)
    fmt = fmt or detect_format(path)
    spec = get_format(fmt)
    if isinstance(spec, ArtifactFormat):
        extras.require(spec.extra, f"running {path} ({spec.name})")
        return spec.open_runner(Path(path))
    return CheckpointRunner(read(path, fmt, head=head, **options), runtime, name=str(path))


def write(ckpt: Checkpoint, out: str | Path, to: str, *, force: bool = False, **options) -> Path:
    """Write ``ckpt`` as format ``to`` into the folder ``out``, atomically (no verification).

    ``force`` replaces ``out`` only if electra-bridge wrote it (engine/output.py)."""
    return _write_verified(ckpt, Path(out), to, force=force, check=None, options=options)


def _write_verified(ckpt: Checkpoint, out: Path, to: str, *, force: bool, check, options: Mapping,
                    card: Callable[[Report | None], dict[str, bytes]] | None = None,
                    record: Callable[[], dict] | None = None) -> Path:
    """Write into a staging folder beside ``out``, run ``check`` on it (it raises on a mismatch and
    returns the report), add ``card(report)``'s files and the provenance record (engine/provenance.py:
    the marker fields, ``record()``'s, the written files' digests), and only then rename it to ``out``."""
    spec = get_format(to)
    source = ckpt.provenance.get("path")
    output.check_target(out, [Path(source)] if source else [], force=force)
    tmp = output.staging_dir(out)
    try:
        with output.naming_out(tmp, out):
            try:
                if isinstance(spec, CheckpointFormat):
                    pipeline.write(spec, ckpt, tmp, **options)
                else:
                    pipeline.export(spec, ckpt, tmp, **options)
                if not (isinstance(spec, CheckpointFormat) and not spec.writes_hf_files):   # keras-hub: its own files
                    _complete_assets(ckpt, tmp)
            except OSError as exc:   # a full disk, RLIMIT_FSIZE, a read-only folder: nothing is left at OUT
                raise FormatError(f"{out}: writing failed ({exc.strerror or exc}); nothing was written") from exc
            # the written files are hashed beside the check, if any (memoized: the listing below hashes only the card)
            hashed = provenance.in_background(provenance.written_digests, tmp)
            try:
                report = check(tmp) if check is not None else None
            finally:
                hashed.exception()   # wait: hashing ends before a failed check's staging folder goes
        try:
            if card is not None:
                assets.write_assets(tmp, {n: d for n, d in card(report).items() if not (tmp / n).exists()})
            output.write_marker(tmp, {"format": to, "head": ckpt.head, "source": source or "in memory",
                                      "source_format": ckpt.provenance.get("format", "in memory"),
                                      "dtype": ckpt.provenance.get("dtype", "as stored"),
                                      **(record() if record is not None else {}),
                                      "files": provenance.written_digests(tmp),
                                      "verification": report.to_dict() if report is not None else None})
        except OSError as exc:
            raise FormatError(f"{out}: writing failed ({exc.strerror or exc}); nothing was written") from exc
        if out.exists() or out.is_symlink():
            output.check_target(out, [], force=force)        # still ours, right before it goes
            old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _complete_assets(ckpt: Checkpoint, folder: Path) -> None:
    """Tokenizer files travel with every conversion: add the source's assets a writer left out and
    derive the missing tokenizer files (tokenizer.json, tokenizer_config.json, ...) from vocab.txt,
    so the folder loads with transformers' AutoTokenizer. Files a writer wrote are never replaced."""
    if not folder.is_dir():
        return
    files = tokenizer_assets.complete(ckpt.assets, ckpt.config)
    assets.write_assets(folder, {name: data for name, data in files.items() if not (folder / name).exists()})


@dataclass
class ConvertResult:
    out: Path
    source: Checkpoint
    report: Report | None
    #: one result per written folder when a source yields several (``net="both"``); else just this one
    parts: list["ConvertResult"] = field(default_factory=list)

    @property
    def outputs(self) -> list["ConvertResult"]:
        return self.parts or [self]


def convert(src: str | Path, out: str | Path, to: str, *, fmt: str | None = None, head: str | None = None,
            verify: bool = True, force: bool = False, runtime: str = "numpy", atol: float | None = None,
            rtol: float | None = None, read_options: Mapping | None = None,
            write_options: Mapping | None = None, dtype: str | None = None,
            min_agreement: float | None = None, report: str | Path | None = None, plot: str | Path | None = None,
            tokenizer: str | Path | None = None) -> ConvertResult:
    """Convert ``src`` into folder ``out`` as format ``to``; verify the result against the source.

    ``dtype`` ("float32", "float16", "bfloat16"; None keeps the stored dtypes) casts the
    weights once on their way to the writer; the written artifact is verified against the
    source computed in float32 (never against a half copy of itself), with the tolerance row
    of its dtype, its prediction agreement (``min_agreement`` gates on it) and, for float16,
    the overflow audit. On a mismatch nothing is left at ``out`` and VerificationError carries the report.
    ``report`` (.json / .md) and ``plot`` (.png) are written from the verification, also on a mismatch.
    ``tokenizer`` is a folder whose tokenizer files replace the source's (a source without any
    is converted with a warning: its output does not load with AutoTokenizer).
    Every output folder gets a model card (README.md: format, head, dtype, source, the verification
    table) and electra-bridge.json (the same as data).
    ``read_options={"net": "both"}`` (Google pretraining checkpoints) converts each net into
    ``out/discriminator`` and ``out/generator``; the result lists both in ``parts``.
    """
    read_options = dict(read_options or {})
    if read_options.get("net") == "both":
        results = [convert(src, Path(out) / net, to, fmt=fmt, head=head, verify=verify, force=force, runtime=runtime,
                           atol=atol, rtol=rtol, read_options={**read_options, "net": net},
                           write_options=write_options, dtype=dtype, min_agreement=min_agreement,
                           report=_for_net(report, net), plot=_for_net(plot, net), tokenizer=tokenizer)
                   for net in ("discriminator", "generator")]
        return ConvertResult(Path(out), results[0].source, results[0].report, results)
    if not verify and (report is not None or plot is not None):
        raise SchemaError("--report and --plot come from the verification: drop --no-verify or them")
    check_report_paths(report, plot)
    pipeline.cast_dtype(dtype)                       # an unknown --dtype fails before the read
    preload(runtime) if verify else None             # its import overlaps the read and the write (runner.py)
    given_assets = tokenizer_assets.from_folder(tokenizer) if tokenizer is not None else None
    ckpt = read(src, fmt, head=head, **read_options)
    if given_assets is not None:
        ckpt = ckpt.with_(assets={**{k: v for k, v in ckpt.assets.items() if k not in assets.ASSET_NAMES},
                                  **given_assets})
    elif not ({"vocab.txt", "tokenizer.json"} & set(ckpt.assets)):
        log.warning("%s has no tokenizer files (vocab.txt, tokenizer.json): %s will not load with AutoTokenizer; "
                    "add them with --tokenizer DIR", src, out)
    out = Path(out)
    reports: list[Report] = []
    tensor_digests: dict[str, dict] = {}
    asked = provenance.asked(to, head, dtype, verify, read_options, write_options or {}, tokenizer)
    source_digests = provenance.in_background(provenance.source_digests, src)   # beside the conversion
    n = len(ckpt.tensors)
    # units: each tensor read (once: verified, the writer's arrays are kept for the source run), a run per head and side
    with progress.Progress(n + (2 * len(runnable_heads(ckpt.head)) if verify else 0), f"writing {to}") as bar:
        retained = Retained(progress.track_tensors(ckpt, bar), keep=verify)
        source_ckpt = retained.ckpt   # verified: the source side runs on these, beside the writer (run_ahead)
        ahead = retained.run_ahead(lambda kept: PrecomputedRunner.on_probe_batches(
            progress.TrackedRunner(CheckpointRunner(kept, runtime, name=str(src)), bar, "source"),
            reduced=dtype not in (None, "float32") or bool((write_options or {}).get("quantize"))))

        def check(tmp: Path) -> Report:
            started = time.perf_counter()
            bar.describe(f"verifying {to}")
            try:
                source = ahead.result()
                if "float16" not in (dtype, source.dtype):   # the float16 audit re-runs the source: keep them then
                    retained.drop()
                target = get_format(to)
                written = (target.verify_runner(tmp) if isinstance(target, CheckpointFormat) and target.verify_runner
                           else open_runner(tmp, to, runtime=runtime, allow_nonfinite=read_options.get("allow_nonfinite")))
                written.name = str(out)
                result = compare(progress.TrackedRunner(written, bar, "written"), source, atol=atol, rtol=rtol,
                                 min_agreement=min_agreement)
            finally:
                retained.drop()
            result.seconds = time.perf_counter() - started   # the check's own time: both sides, the comparison
            reports.append(result)
            write_report(result, report, plot)
            if not result.ok:
                why = result.problem() or (f"first divergence at {result.first_divergence}"
                                           if result.first_divergence else None)
                raise VerificationError(f"{out} does not match {src}" + (f": {why}" if why else ""), result)
            return result

        written_ckpt = provenance.digesting(pipeline.cast(source_ckpt, dtype), tensor_digests)
        _write_verified(written_ckpt, out, to, force=force, check=check if verify else None,
                        options=dict(write_options or {}),
                        card=lambda result: model_card.files(
                            written_ckpt, to, result, dtype=(write_options or {}).get("quantize")),   # int8: graph's
                        record=lambda: {"options": asked, "source_files": source_digests.result(),
                                        "tensors": dict(sorted(tensor_digests.items()))})
    return ConvertResult(out, ckpt, reports[0] if reports else None)


def _for_net(path: str | Path | None, net: str) -> Path | None:
    """``r.md`` -> ``r.discriminator.md``: each net of ``--net both`` gets its own report."""
    return None if path is None else Path(path).with_name(f"{Path(path).stem}.{net}{Path(path).suffix}")


def check_report_paths(report: str | Path | None, plot: str | Path | None) -> None:
    """Fail before the long work when a report or plot could not be written at the end."""
    if report is not None and Path(report).suffix.lower() not in REPORT_FORMATS:
        raise SchemaError(f"report {report}: use a .json or .md file name")
    for what, path in (("report", report), ("plot", plot)):
        if path is not None and not Path(path).parent.is_dir():
            raise SchemaError(f"{what} {path}: the folder {Path(path).parent} does not exist")
    if plot is not None:
        from .plot import require_matplotlib
        if Path(plot).suffix.lower() != ".png":
            raise SchemaError(f"plot {plot}: the plot is a PNG; name it *.png")
        require_matplotlib()


def write_report(result: Report, report: str | Path | None, plot: str | Path | None) -> None:
    if report is not None:
        result.write(report)
    if plot is not None:
        from .plot import plot_drift
        plot_drift(result, plot)


def verify(a: str | Path, b: str | Path, *, heads: Iterable[str] | None = None, atol: float | None = None,
           rtol: float | None = None, runtime: str = "numpy", batch_for=None, text: Sequence[str] | None = None,
           text_pair: Sequence[str] | None = None, inputs: str | Path | Mapping | None = None,
           report: str | Path | None = None, plot: str | Path | None = None,
           read_options: Mapping | None = None, min_agreement: float | None = None) -> Report:
    """Compare every output of every common head of two models of any formats (B is the reference).

    Inputs: the standard probe batch, or ``text`` (with optional ``text_pair``) tokenized with
    the vocabulary beside A (else B), or ``inputs`` (an .npz path or a dict of int arrays
    [B, S] / [B, K, S]). ``report`` writes JSON or Markdown by extension, ``plot`` a PNG of the
    per-layer drift. ``read_options`` (e.g. ``{"net": "generator"}``) reach each side's reader
    when its format declares them. ``min_agreement`` fails the report when a head's prediction
    agreement is below it.
    """
    started = time.perf_counter()
    if sum(x is not None for x in (batch_for, text, inputs)) > 1:
        raise SchemaError("give at most one of text, inputs and batch_for")
    if text_pair is not None and text is None:
        raise SchemaError("--text-pair needs --text")
    check_report_paths(report, plot)
    batch = user_inputs.load(inputs) if isinstance(inputs, (str, Path)) else (
        user_inputs.complete(inputs, "inputs") if inputs is not None else None)
    runners = [open_runner(p, runtime=runtime, **_declared(p, read_options)) for p in (a, b)]
    source = None
    if text is not None:
        cfg = runners[0].config
        batch = text_inputs.tokenize(_text_assets(runners, (a, b)), list(text),
                                     list(text_pair) if text_pair is not None else None,
                                     pad_token_id=cfg.pad_token_id, max_length=cfg.max_position_embeddings)
        kind = "pair" if text_pair is not None else "row"
        source = f"text ({len(text)} {kind}{'s' if len(text) != 1 else ''}, {batch['input_ids'].shape[-1]} tokens)"
    elif inputs is not None:
        source = f"file {Path(inputs).name}" if isinstance(inputs, (str, Path)) else "given arrays"
    if batch is not None:
        for r in runners:
            user_inputs.check(batch, r.config, source)

        def batch_for(head: str) -> dict:
            return user_inputs.for_head(batch, head)
    names = list(heads) if heads is not None else [h for h in runners[0].heads if h in runners[1].heads]
    with progress.Progress(2 * len(names) + _tensor_count(runners), "reading") as bar:
        tracked = [progress.TrackedRunner(_track(r, bar), bar, label) for r, label in zip(runners, "AB")]
        result = compare(*tracked, heads=heads, atol=atol, rtol=rtol, batch_for=batch_for,
                         min_agreement=min_agreement)
    result.source = source or result.source   # else compare()'s own: the probe batch, or the precision rows
    result.seconds = time.perf_counter() - started
    write_report(result, report, plot)
    return result


def _declared(path, options: Mapping | None) -> dict:
    """The read options ``path``'s format declares (``--net`` reaches tf1 sides, not safetensors ones)."""
    if not options:
        return {}
    fmt = detect_format(path)
    declared = {o.dest for o in get_format(fmt).options if o.stage == "read"} | {"allow_nonfinite"}
    return {"fmt": fmt, **{k: v for k, v in options.items() if k in declared and v is not None}}


def _text_assets(runners, paths) -> dict[str, bytes]:
    """The tokenizer files of A (else B): a checkpoint's own assets, else the files beside an artifact."""
    found = []
    for runner, path in zip(runners, paths):
        files = dict(runner.ckpt.assets) if isinstance(runner, CheckpointRunner) else assets.collect(Path(path) if Path(path).is_dir()
                                                                         else Path(path).parent)
        if "vocab.txt" in files or "tokenizer.json" in files:
            found.append((path, files))
    if not found:
        raise SchemaError(f"--text needs a vocabulary: neither {paths[0]} nor {paths[1]} has vocab.txt or "
                          "tokenizer.json beside it")
    if len(found) == 2 and found[0][1].get("vocab.txt") != found[1][1].get("vocab.txt"):
        log.warning("A and B ship different vocabularies; tokenizing with A's (%s)", found[0][0])
    return found[0][1]


def _tensor_count(runners) -> int:
    return sum(len(r.ckpt.tensors) for r in runners if isinstance(r, CheckpointRunner))


def _track(runner, bar):
    """A checkpoint runner whose weights tick ``bar`` as they load (artifacts load on their own)."""
    if isinstance(runner, CheckpointRunner):
        runner.ckpt = progress.track_tensors(runner.ckpt, bar)   # our own fresh runner: its weights load lazily
    return runner


def inspect(path: str | Path, fmt: str | None = None, *, head: str | None = None, **options) -> dict:
    """Format, weights file, config, head, dtypes, tensors (name, shape, stored dtype) and parameter
    count of ``path``; ``head`` and read ``options`` (net, config) read it as convert would."""
    path = located(path)
    fmt = fmt or detect_format(path)
    spec = get_format(fmt)
    if isinstance(spec, ArtifactFormat):
        if head is not None or options:
            raise SchemaError(f"{path} is a {fmt} artifact: --head, --net and --config apply to checkpoints only")
        return {"format": fmt, "path": str(path), **spec.inspect(Path(path))}
    ckpt = read(path, fmt, head=head, **options)
    return {
        "format": fmt,
        "path": str(path),
        "weights": ckpt.provenance.get("file"),
        "head": ckpt.head,
        "provenance": dict(ckpt.provenance),
        "config": ckpt.config.to_dict(),
        "num_parameters": ckpt.num_parameters,
        "dtypes": dict(Counter(np.dtype(t.dtype).name for t in ckpt.tensors.values()).most_common()),
        "tensors": [{"name": n, "shape": list(t.shape), "dtype": np.dtype(t.dtype).name}
                    for n, t in sorted(ckpt.tensors.items())],
        "assets": sorted(ckpt.assets),
    }
