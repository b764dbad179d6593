"""The Python API, mirroring the CLI: read, write, convert, verify, inspect.

    from electra_bridge.converters import convert, verify, inspect
    convert("google-ckpt/", "out/", to="safetensors")        # verified, atomic
    report = verify("out/", "model.onnx"); assert report.ok
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra_bridge.runtimes import CheckpointRunner, Report, Runner, compare
from electra_bridge.schemas import BridgeError, Checkpoint, FormatError

from . import FORMATS, format_module

log = logging.getLogger("electra_bridge")


class VerificationError(BridgeError):
    """The written artifact does not compute what its source computes (CLI exit code 1)."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


def detect_format(path: str | Path) -> str:
    """The first registered format whose ``detect`` accepts ``path``."""
    path = Path(path)
    if not path.exists() and not Path(f"{path}.index").exists():
        raise FormatError(f"{path} does not exist")
    for name in FORMATS:
        if format_module(name).detect(path):
            return name
    raise FormatError(f"{path}: no known ELECTRA format found (known: {', '.join(FORMATS)})")


def read(path: str | Path, fmt: str | None = None, *, head: str | None = None, **options) -> Checkpoint:
    """Read any checkpoint format into a canonical Checkpoint (options: e.g. net, config)."""
    fmt = fmt or detect_format(path)
    module = format_module(fmt)
    if module.KIND != "checkpoint":
        raise FormatError(f"{path} is a {fmt} artifact: it can be run and verified, not read back as a checkpoint")
    return module.read(Path(path), head=head, **{k: v for k, v in options.items() if v is not None})


def open_runner(path: str | Path, fmt: str | None = None, *, runtime: str = "numpy", head: str | None = None,
                **options) -> Runner:
    """Something that runs ``path``: a checkpoint through ``runtime``, an artifact through its own runner."""
    fmt = fmt or detect_format(path)
    module = format_module(fmt)
    if module.KIND == "artifact":
        return module.open_runner(Path(path))
    return CheckpointRunner(read(path, fmt, head=head, **options), runtime, name=str(path))


def _staging_dir(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write(ckpt: Checkpoint, out: str | Path, to: str, *, force: bool = False, **options) -> Path:
    """Write ``ckpt`` as format ``to`` into the folder ``out``, atomically (no verification)."""
    return _write_verified(ckpt, Path(out), to, force=force, check=None, options=options)


def _write_verified(ckpt: Checkpoint, out: Path, to: str, *, force: bool, check, options: Mapping) -> Path:
    module = format_module(to)
    if not hasattr(module, "write"):
        raise BridgeError(f"{to} is read-only")
    if out.exists() and not force:
        raise BridgeError(f"{out} already exists; pass --force to replace it")
    tmp = _staging_dir(out)
    try:
        module.write(ckpt, tmp, **{k: v for k, v in options.items() if v is not None})
        if check is not None:
            check(tmp)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


@dataclass
class ConvertResult:
    out: Path
    source: Checkpoint
    report: Report | None


def convert(src: str | Path, out: str | Path, to: str, *, fmt: str | None = None, head: str | None = None,
            verify: bool = True, force: bool = False, runtime: str = "numpy", atol: float | None = None,
            rtol: float | None = None, read_options: Mapping | None = None,
            write_options: Mapping | None = None) -> ConvertResult:
    """Convert ``src`` into folder ``out`` as format ``to``; verify the result against the source.

    On a mismatch nothing is left at ``out`` and VerificationError carries the report.
    ``read_options={"net": "both"}`` (Google pretraining checkpoints) converts each net into
    ``out/discriminator`` and ``out/generator`` and returns the discriminator's result.
    """
    read_options = dict(read_options or {})
    if read_options.get("net") == "both":
        results = [convert(src, Path(out) / net, to, fmt=fmt, head=head, verify=verify, force=force, runtime=runtime,
                           atol=atol, rtol=rtol, read_options={**read_options, "net": net},
                           write_options=write_options)
                   for net in ("discriminator", "generator")]
        return results[0]
    ckpt = read(src, fmt, head=head, **read_options)
    out = Path(out)
    reports: list[Report] = []

    def check(tmp: Path) -> None:
        source = CheckpointRunner(ckpt, runtime, name=str(src))
        written = open_runner(tmp, to)
        written.name = str(out)
        report = compare(written, source, atol=atol, rtol=rtol)
        reports.append(report)
        if not report.ok:
            raise VerificationError(f"{out} does not match {src}:\n{report.table()}", report)

    _write_verified(ckpt, out, to, force=force, check=check if verify else None, options=dict(write_options or {}))
    return ConvertResult(out, ckpt, reports[0] if reports else None)


def verify(a: str | Path, b: str | Path, *, heads: Iterable[str] | None = None, atol: float | None = None,
           rtol: float | None = None, runtime: str = "numpy", batch_for=None) -> Report:
    """Compare every output of every common head of two models of any formats (B is the reference)."""
    return compare(open_runner(a, runtime=runtime), open_runner(b, runtime=runtime), heads=heads, atol=atol,
                   rtol=rtol, batch_for=batch_for)


def inspect(path: str | Path, fmt: str | None = None) -> dict:
    """Format, config, head, tensors (name, shape, dtype) and parameter count of ``path``."""
    fmt = fmt or detect_format(path)
    module = format_module(fmt)
    if module.KIND == "artifact":
        return {"format": fmt, "path": str(path), **module.inspect(Path(path))}
    ckpt = read(path, fmt)
    return {
        "format": fmt,
        "path": str(path),
        "head": ckpt.head,
        "provenance": dict(ckpt.provenance),
        "config": ckpt.config.to_dict(),
        "num_parameters": ckpt.num_parameters,
        "tensors": [{"name": n, "shape": list(t.shape), "dtype": str(np.dtype(t.dtype))}
                    for n, t in sorted(ckpt.tensors.items())],
        "assets": sorted(ckpt.assets),
    }
