"""The commands of ``electra-bridge``: each turns parsed arguments into an ``Outcome``.

An Outcome is what the user sees: the exit code, the lines for a terminal, and the fields of
the JSON document (``--json``). ``cli.main`` prints it; errors never reach here as output,
they are raised (BridgeError, VerificationError) and rendered by ``cli.main`` in one place.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from electra_bridge.schemas import SchemaError

from .. import api
from ..engine import provenance
from ..engine.options import accepted
from ..formats import get_format
from . import catalog
from .parser import format_options, opt_formats

EXIT_OK, EXIT_MISMATCH, EXIT_UNUSABLE = 0, 1, 2
log = logging.getLogger("electra_bridge.cli")

#: inspect's text output: the config keys that say which model this is
CONFIG_KEYS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "hidden_act", "num_labels")


@dataclass
class Outcome:
    exit_code: int
    lines: list[str]                                   # stdout for a terminal
    fields: dict = field(default_factory=dict)         # the command's part of the --json document
    notes: list[str] = field(default_factory=list)     # "wrote ..." lines, dropped by --quiet


def read_options(args: argparse.Namespace, fmt: str | None = None) -> dict:
    """The read options given (``--net``, ``--config``, ``--allow-nonfinite``), refused with the
    reason when ``fmt`` (the source's format) does not take them."""
    given = {o.dest: getattr(args, o.dest) for o in format_options()
             if o.stage == "read" and getattr(args, o.dest, None) is not None}
    if fmt is not None:
        _refuse_misplaced(given, fmt, "read", "the source")
    if getattr(args, "allow_nonfinite", False):
        given["allow_nonfinite"] = True
    return given


def write_options(args: argparse.Namespace, to: str) -> dict:
    given = {o.dest: getattr(args, o.dest) for o in format_options()
             if o.stage == "write" and getattr(args, o.dest, None) not in (None, False)}
    _refuse_misplaced(given, to, "write", f"--to {to}")
    return given


def _refuse_misplaced(given: dict, fmt: str, stage: str, what: str) -> None:
    declared = accepted(get_format(fmt).options, stage)
    for dest in given:
        if dest not in declared:
            opt = next(o for o in format_options() if o.dest == dest)
            raise SchemaError(f"{opt.flag} does not apply to {what} ({fmt}): it is a {stage} option of "
                              f"{', '.join(opt_formats(opt))} only")


def _source_format(args: argparse.Namespace, path) -> str:
    return args.fmt or api.detect_format(path)


def _convert_fields(result: api.ConvertResult, to: str) -> dict:
    return {"out": str(result.out), "format": to,
            "outputs": [{"out": str(r.out), "format": to, "head": r.source.head, "verified": r.report is not None,
                         "report": r.report.to_dict() if r.report else None} for r in result.outputs]}


def cmd_convert(args: argparse.Namespace) -> Outcome:
    src_fmt = _source_format(args, args.src)
    result = api.convert(args.src, args.out, args.to, fmt=src_fmt, head=args.head, verify=not args.no_verify,
                         force=args.force, runtime=args.runtime, atol=args.atol, rtol=args.rtol,
                         read_options=read_options(args, src_fmt), write_options=write_options(args, args.to),
                         dtype=args.dtype, min_agreement=args.min_agreement, report=args.report, plot=args.plot,
                         tokenizer=args.tokenizer)
    lines, notes = [], []
    for r in result.outputs:
        if r.report:
            lines.append(r.report.table())
        lines.append(f"wrote {r.out} ({args.to}, head {r.source.head})" + ("" if r.report else " -- NOT verified"))
    notes += [f"wrote {kind} {path}" for kind, path in (("report", args.report), ("plot", args.plot)) if path]
    return Outcome(EXIT_OK, lines, _convert_fields(result, args.to), notes)


def cmd_verify(args: argparse.Namespace) -> Outcome:
    if args.provenance:
        return _check_provenance(args)
    if args.b is None:
        raise SchemaError("verify needs two models, A and B (or one output folder with --provenance)")
    options = read_options(args)
    sides = [api.detect_format(p) for p in (args.a, args.b)]
    declared = {o.dest for fmt in sides for o in get_format(fmt).options} | {"allow_nonfinite", "config"}
    unused = [k for k in options if k not in declared]
    if unused:   # an option neither side takes would be silently ignored
        opt = next(o for o in format_options() if o.dest == unused[0])
        raise SchemaError(f"{opt.flag} applies to neither side ({sides[0]}, {sides[1]}): it is a read option "
                          f"of {', '.join(opt_formats(opt))} only")
    report = api.verify(args.a, args.b, heads=args.heads, atol=args.atol, rtol=args.rtol, runtime=args.runtime,
                        text=args.text, text_pair=args.text_pair, inputs=args.inputs, report=args.report,
                        plot=args.plot, read_options=options, min_agreement=args.min_agreement)
    notes = [f"wrote {kind} {path}" for kind, path in (("report", args.report), ("plot", args.plot)) if path]
    return Outcome(EXIT_OK if report.ok else EXIT_MISMATCH, [report.table()], report.to_dict(), notes)


def _check_provenance(args: argparse.Namespace) -> Outcome:
    if args.b is not None:
        raise SchemaError("--provenance checks one output folder against its own record: give only A")
    problems = provenance.check(Path(args.a))
    count = len(provenance.load(Path(args.a))["files"])
    lines = [f"{args.a}: " + (f"all {count} files as recorded" if not problems else
                                f"{len(problems)} of the recorded files differ")] + [f"  {p}" for p in problems]
    return Outcome(EXIT_MISMATCH if problems else EXIT_OK, lines, {"folder": str(args.a), "problems": problems})


def cmd_inspect(args: argparse.Namespace) -> Outcome:
    fmt = _source_format(args, args.path)
    info = api.inspect(args.path, fmt, head=args.head, **read_options(args, fmt))
    lines = [f"format: {info['format']}" + (f" ({info['weights']})" if info.get("weights") else ""),
             f"head: {info.get('head')}",
             f"parameters: {info.get('num_parameters', 0):,}"]
    if info.get("dtypes"):
        lines.append("dtype: " + ", ".join(f"{d} ({n} tensors)" for d, n in info["dtypes"].items()))
    cfg = info.get("config", {})
    lines.append("config: " + ", ".join(f"{k}={cfg[k]}" for k in CONFIG_KEYS if k in cfg)
                 + (f" ({info['provenance']['config']})" if info.get("provenance", {}).get("config") else ""))
    lines += [f"  {t['name']:<60} {str(t['shape']):<16} {t['dtype']}" for t in info.get("tensors", [])]
    if info.get("assets"):
        lines.append("assets: " + ", ".join(info["assets"]))
    return Outcome(EXIT_OK, lines, info)


def cmd_batch(args: argparse.Namespace) -> Outcome:
    from .. import batch

    items = batch.load_plan(args.plan)
    if args.ray is not None and args.jobs != 1:
        raise SchemaError("--jobs is for local processes; with --ray the cluster decides how many run at once")

    def done(outcome: batch.Outcome, k: int, n: int) -> None:
        log.info("[%d/%d] %s: %s (%.1f s)%s", k, n, outcome.item.out, outcome.status, outcome.seconds,
                 f": {outcome.detail}" if outcome.status in ("mismatch", "failed") else "")

    outcomes = batch.run(items, jobs=args.jobs, use_ray=args.ray is not None, ray_address=args.ray or None,
                         on_done=done)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("converted", "skipped", "mismatch", "failed")}
    return Outcome(batch.exit_code(outcomes), batch.table(outcomes),
                   {"plan": str(args.plan), **counts, "items": [o.to_dict() for o in outcomes]})


def cmd_formats(args: argparse.Namespace) -> Outcome:
    rows = catalog.rows()
    return Outcome(EXIT_OK, catalog.table(rows), {"formats": [r.to_dict() for r in rows],
                                                  "runtimes": catalog.runtimes()})


def cmd_demo(args: argparse.Namespace) -> Outcome:
    from .. import demo

    result = demo.run(args.out, head=args.head, runtime=args.runtime,
                      echo=None if (args.json or args.quiet) else print)
    return Outcome(EXIT_OK if result.ok else EXIT_MISMATCH, [result.table()], result.to_dict(),
                   [f"wrote {', '.join(str(p) for p in result.files)}"])


COMMANDS = {"convert": cmd_convert, "verify": cmd_verify, "inspect": cmd_inspect, "batch": cmd_batch,
            "formats": cmd_formats, "demo": cmd_demo}
