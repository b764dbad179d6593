"""The ``electra-bridge`` command line: convert, verify, inspect, demo.

Exit codes (all commands): 0 success / equal, 1 verification mismatch, 2 unusable input.
Progress bars go to stderr only when it is a terminal and ``--quiet`` is not given;
``--json`` makes stdout exactly one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

from electra_bridge.runtimes import RUNTIMES, TOLERANCES
from electra_bridge.schemas import HEADS, BridgeError

from . import api
from .engine import progress
from .engine.options import Option
from .formats import FORMATS, all_formats

EXIT_OK, EXIT_MISMATCH, EXIT_UNUSABLE = 0, 1, 2

EPILOG = """exit codes: 0 equal / success, 1 outputs differ beyond tolerance, 2 unusable input
(missing or corrupt file, unknown format, schema mismatch, missing framework)."""

VERIFY_EPILOG = """inputs: the standard probe batch by default (seeded: 3 rows of mixed length, right
padding, both segment ids); --text "..." (repeatable; --text-pair once per --text) tokenized
with the vocab.txt / tokenizer.json beside A (else B): [CLS] A [SEP] B [SEP]; or --inputs
FILE.npz with input_ids [B,S] or [B,K,S] (+ optional attention_mask, token_type_ids).
A multiple-choice head sees [B,S] rows as the K choices of one example.

tolerance: an element passes when |a-b| <= atol + rtol*|b| (B is the reference). Defaults
come from one table keyed by (runtime, dtype); a pair takes the looser of its two sides:
""" + "\n".join(f"  {rt:<22} {dt:<8} atol {at:<7g} rtol {rt_:g}" for (rt, dt), (at, rt_) in TOLERANCES.items()) + """

agreement: every report adds, per head, the fraction of unpadded positions where A and B
predict the same (top-1, QA start/end, discriminator logit > 0); --min-agreement F gates on it.
When a side is float16, the reference's largest activation per layer is audited against 65504.

localisation: when both sides expose hidden states the report adds per-layer drift
(embeddings, each layer, head) and names the first stage out of tolerance.

""" + EPILOG


def _format_options() -> list[Option]:
    seen: dict[str, Option] = {}
    for fmt in all_formats():
        for opt in fmt.options:
            seen.setdefault(opt.dest, opt)
    return list(seen.values())


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="only errors on stderr (no progress bars)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")


def _add_nonfinite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="read weights holding NaN/Inf as they are (default: refused, exit 2, naming the tensor)")


def _add_tolerance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atol", type=float, help="absolute tolerance (default: from the tolerance table)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default: from the tolerance table)")
    p.add_argument("--runtime", default="numpy", choices=list(RUNTIMES),
                   help="runtime that executes checkpoint sides (default: numpy reference)")


def _add_agreement(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-agreement", type=float, metavar="F",
                   help="also fail (exit 1) when a head's prediction agreement -- top-1, start/end, replaced-token "
                        "decisions, over unpadded positions -- is below the fraction F (e.g. 0.99)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="electra-bridge",
        description="Move ELECTRA checkpoints between frameworks and prove every move with equal-logit checks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    options = _format_options()
    heads = list(HEADS)

    c = sub.add_parser("convert", help="convert SRC into folder OUT and verify it against SRC",
                       description="Detect SRC's format, write OUT as --to, run both on the probe batch and compare "
                                   "every output of the head. On a mismatch OUT is not created and the exit code is 1.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("src", help="source checkpoint (folder or file)")
    c.add_argument("out", help="output folder (must not exist unless --force)")
    c.add_argument("--to", required=True, choices=list(FORMATS),
                   help="output format")
    c.add_argument("--from", dest="fmt", choices=list(FORMATS), help="source format (default: detected)")
    c.add_argument("--head", choices=heads, help="head to convert (default: the source's own; 'base' drops the head)")
    c.add_argument("--force", action="store_true", help="replace OUT if it exists")
    c.add_argument("--no-verify", action="store_true", help="skip the equal-output check (not recommended)")
    c.add_argument("--json", action="store_true", help="print the verification report as JSON")
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="cast the weights on write (default: keep the stored dtypes); the result is verified "
                        "against the source run in float32, with that dtype's tolerance row")
    _add_tolerance(c)
    _add_agreement(c)
    _add_nonfinite(c)
    for opt in options:
        c.add_argument(opt.flag, dest=opt.dest, help=f"[{opt.stage}] {opt.help}", **opt.kwargs)
    _add_common(c)

    v = sub.add_parser("verify", help="run A and B on the same inputs and compare every output of every common head",
                       description="Run A and B (checkpoints or artifacts of any supported format) on the same "
                                   "inputs and compare every output of every head both have: max-abs, max-rel, "
                                   "worst position, per-layer drift. Exit 0 when everything is within tolerance, "
                                   "1 when not, 2 for unusable input. B is the reference for relative errors.",
                       epilog=VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("a", help="model A (folder or file, any format)")
    v.add_argument("b", help="model B, the reference (folder or file, any format)")
    v.add_argument("--heads", nargs="+", choices=heads, help="heads to compare (default: all common heads)")
    v.add_argument("--json", action="store_true", help="print the full report (per head, output and layer) as JSON")
    v.add_argument("--report", metavar="PATH", help="also write the report to PATH: .json or .md (Markdown)")
    v.add_argument("--plot", metavar="PATH.png", help="draw per-layer drift into a PNG (needs matplotlib)")
    given = v.add_mutually_exclusive_group()
    given.add_argument("--text", action="append", metavar="TEXT",
                       help="tokenize TEXT with the model's vocabulary instead of the probe batch (repeatable)")
    given.add_argument("--inputs", metavar="FILE.npz", help="saved input arrays instead of the probe batch")
    v.add_argument("--text-pair", action="append", metavar="TEXT",
                   help="second segment for the --text of the same position (repeat once per --text)")
    _add_tolerance(v)
    _add_agreement(v)
    _add_nonfinite(v)
    for opt in options:
        if opt.stage == "read":   # e.g. --net: reaches the sides whose format declares it
            v.add_argument(opt.flag, dest=opt.dest, help=f"[read] {opt.help}", **opt.kwargs)
    _add_common(v)

    i = sub.add_parser("inspect", help="format, config, head, tensors and parameter count of PATH")
    i.add_argument("path")
    i.add_argument("--from", dest="fmt", choices=list(FORMATS), help="format (default: detected)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    _add_common(i)

    d = sub.add_parser("demo", help="take a bundled model through every installed format, verifying each hop",
                       description="The toolkit's main job on an embedded model: convert it through every checkpoint "
                                   "format available in this installation and export every artifact format, verify "
                                   "each hop, print the table and write report.json, report.md and drift.png into "
                                   "--out. Hops whose format or framework is missing are skipped with the reason.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--out", default="demo-out", help="output folder (default: ./demo-out; replaced if it exists)")
    d.add_argument("--head", choices=heads, help="head of the embedded model (default: pretraining)")
    d.add_argument("--runtime", default="numpy", choices=list(RUNTIMES),
                   help="runtime that executes checkpoint sides (default: numpy reference)")
    d.add_argument("--json", action="store_true", help="print the hop table as JSON")
    _add_common(d)
    return parser


def _options(args: argparse.Namespace, stage: str) -> dict:
    out = {o.dest: getattr(args, o.dest, None) for o in _format_options() if o.stage == stage}
    if stage == "read" and getattr(args, "allow_nonfinite", False):
        out["allow_nonfinite"] = True
    return out


def cmd_convert(args: argparse.Namespace) -> int:
    result = api.convert(args.src, args.out, args.to, fmt=args.fmt, head=args.head, verify=not args.no_verify,
                         force=args.force, runtime=args.runtime, atol=args.atol, rtol=args.rtol,
                         read_options=_options(args, "read"), write_options=_options(args, "write"),
                         dtype=args.dtype, min_agreement=args.min_agreement)
    parts = result.outputs
    if args.json:  # stdout is exactly one JSON document (a list when several folders were written)
        docs = [{"out": str(r.out), "format": args.to, "head": r.source.head, "verified": r.report is not None,
                 "report": r.report.to_dict() if r.report else None} for r in parts]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return EXIT_OK
    for r in parts:
        if r.report:
            print(r.report.table())
        print(f"wrote {r.out} ({args.to}, head {r.source.head})" + ("" if r.report else " -- NOT verified"))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    report = api.verify(args.a, args.b, heads=args.heads, atol=args.atol, rtol=args.rtol, runtime=args.runtime,
                        text=args.text, text_pair=args.text_pair, inputs=args.inputs, report=args.report,
                        plot=args.plot, read_options=_options(args, "read"), min_agreement=args.min_agreement)
    print(report.to_json() if args.json else report.table())
    if not args.json and not args.quiet:
        for kind, path in (("report", args.report), ("plot", args.plot)):
            if path:
                print(f"wrote {kind} {path}")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    result = demo.run(args.out, head=args.head, runtime=args.runtime, echo=None if (args.json or args.quiet) else print)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.table())
        print(f"wrote {', '.join(str(p) for p in result.files)}")
    return EXIT_OK if result.ok else EXIT_MISMATCH


def cmd_inspect(args: argparse.Namespace) -> int:
    info = api.inspect(args.path, args.fmt)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"format: {info['format']}\nhead: {info.get('head')}\nparameters: {info.get('num_parameters', 0):,}")
    if info.get("dtypes"):
        print("dtype: " + ", ".join(f"{d} ({n} tensors)" for d, n in info["dtypes"].items()))
    cfg = info.get("config", {})
    keys = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "hidden_act")
    print("config: " + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg))
    for t in info.get("tensors", []):
        print(f"  {t['name']:<60} {str(t['shape']):<16} {t['dtype']}")
    if info.get("assets"):
        print("assets: " + ", ".join(info["assets"]))
    return EXIT_OK


COMMANDS = {"convert": cmd_convert, "verify": cmd_verify, "inspect": cmd_inspect, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):   # past RLIMIT_FSIZE a write fails (EFBIG, a clean error) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    progress.configure(False if args.quiet else None)
    try:
        return COMMANDS[args.command](args)
    except api.VerificationError as exc:
        print(exc.report.to_json() if getattr(args, "json", False) else exc.report.table())
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_MISMATCH
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except Exception as exc:  # an input we did not foresee: still one line, exit 2
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
