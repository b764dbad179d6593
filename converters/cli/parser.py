"""The argument parser of ``electra-bridge``: commands, options and their help text.

Format-specific options are data (each format's ``FORMAT.options``, engine/options.py): each
is added once to ``convert`` (and read options to ``verify`` and ``inspect``); the engine
refuses an option the chosen format does not declare, with the reason.
"""

from __future__ import annotations

import argparse
import math

from electra_bridge.runtimes import RUNTIMES, TOLERANCES
from electra_bridge.schemas import HEADS

from ..engine.options import Option
from ..engine.output import tool_version
from ..formats import FORMATS, all_formats

EPILOG = """exit codes: 0 equal / success, 1 outputs differ beyond tolerance, 2 unusable input
(missing or corrupt file, unknown format, schema mismatch, missing framework).
--json: stdout is one JSON document {electra_bridge, command, ok, exit_code, error, ...the command's
fields}, the same shape on success and on failure."""

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

localisation: when both sides expose hidden states (checkpoints, TorchScript, torch.export, ONNX
exported with --hidden-states) the report adds per-layer drift (embeddings, each layer, head) and
names the first stage out of tolerance.

""" + EPILOG


def format_options() -> list[Option]:
    """Every format's options, each flag once (formats sharing a flag share its meaning)."""
    seen: dict[str, Option] = {}
    for fmt in all_formats():
        for opt in fmt.options:
            seen.setdefault(opt.dest, opt)
    return list(seen.values())


def tolerance_value(text: str) -> float:
    """A finite, non-negative float (argparse type for --atol / --rtol)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def fraction_value(text: str) -> float:
    """A fraction in [0, 1] (argparse type for --min-agreement)."""
    value = tolerance_value(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be a fraction between 0 and 1 (e.g. 0.99)")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the result and errors (no progress, no log lines)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also show the frameworks' own start-up and log messages (hidden by default)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")


def _add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON document (see the epilog)")


def _add_nonfinite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="read weights holding NaN/Inf as they are (default: refused, exit 2, naming the tensor)")


def _add_tolerance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atol", type=tolerance_value, help="absolute tolerance >= 0 (default: from the tolerance table)")
    p.add_argument("--rtol", type=tolerance_value, help="relative tolerance >= 0 (default: from the tolerance table)")
    p.add_argument("--runtime", default="numpy", choices=list(RUNTIMES),
                   help="runtime that executes checkpoint sides (default: numpy reference)")
    p.add_argument("--min-agreement", type=fraction_value, metavar="F",
                   help="also fail (exit 1) when a head's prediction agreement -- top-1, start/end, replaced-token "
                        "decisions, over unpadded positions -- is below the fraction F (e.g. 0.99)")


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="PATH", help="also write the verification report to PATH: .json or .md")
    p.add_argument("--plot", metavar="PATH.png", help="draw per-layer drift into a PNG (needs matplotlib)")


def _add_format_options(p: argparse.ArgumentParser, options: list[Option], stages: tuple[str, ...]) -> None:
    for opt in options:
        if opt.stage in stages:
            p.add_argument(opt.flag, dest=opt.dest, help=f"[{opt.stage}: {', '.join(opt_formats(opt))}] {opt.help}",
                           **opt.kwargs)


def opt_formats(opt: Option) -> list[str]:
    """The formats that declare ``opt`` (named in its help and in the refusal of a misplaced option)."""
    return [f.name for f in all_formats() if any(o.dest == opt.dest and o.stage == opt.stage for o in f.options)]


class Parser(argparse.ArgumentParser):
    """A usage mistake is one ``error:`` line naming the fix (argparse prints the whole usage)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _sub(sub, name: str, help: str, description: str, epilog: str = EPILOG) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser(version: str | None = None) -> argparse.ArgumentParser:
    version = version or tool_version()
    parser = Parser(
        prog="electra-bridge",
        description="Move ELECTRA checkpoints between frameworks and prove every move with equal-logit checks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"electra-bridge {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    options = format_options()
    heads = list(HEADS)

    c = _sub(sub, "convert", "convert SRC into folder OUT and verify it against SRC",
             "Detect SRC's format, write OUT as --to, run both on the probe batch and compare every output of "
             "the head (and base's last hidden state). On a mismatch OUT is not created and the exit code is 1. "
             "OUT holds the weights, config.json, tokenizer files, a model card (README.md) and "
             "electra-bridge.json (what was converted, from what, and how it verified).")
    c.add_argument("src", help="source checkpoint (folder or file; a Hugging Face cache folder models--org--name works)")
    c.add_argument("out", help="output folder (must not exist unless --force)")
    c.add_argument("--to", required=True, choices=list(FORMATS), help="output format (see `electra-bridge formats`)")
    c.add_argument("--from", dest="fmt", choices=list(FORMATS), help="source format (default: detected)")
    c.add_argument("--head", choices=heads, help="head to convert (default: the source's own; 'base' drops the head)")
    c.add_argument("--force", action="store_true", help="replace OUT if it exists and electra-bridge wrote it")
    c.add_argument("--no-verify", action="store_true", help="skip the equal-output check (not recommended)")
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="cast the weights on write (default: keep the stored dtypes); the result is verified "
                        "against the source run in float32, with that dtype's tolerance row")
    c.add_argument("--tokenizer", metavar="DIR",
                   help="take tokenizer files (vocab.txt, tokenizer.json, ...) from DIR when the source has none")
    _add_json(c, "the written folders and their verification reports")
    _add_report(c)
    _add_tolerance(c)
    _add_nonfinite(c)
    _add_format_options(c, options, ("read", "write"))
    _add_common(c)

    v = _sub(sub, "verify", "run A and B on the same inputs and compare every output of every common head",
             "Run A and B (checkpoints or artifacts of any supported format) on the same inputs and compare "
             "every output of every head both have: max-abs, max-rel, worst position, prediction agreement, "
             "per-layer drift. Exit 0 when everything is within tolerance, 1 when not, 2 for unusable input. "
             "B is the reference for relative errors.", VERIFY_EPILOG)
    v.add_argument("a", help="model A (folder or file, any format)")
    v.add_argument("b", nargs="?", help="model B, the reference (folder or file, any format)")
    v.add_argument("--provenance", action="store_true",
                   help="instead of comparing A with B: re-hash output folder A's files against its "
                        "electra-bridge.json record (exit 1 naming each changed, missing or unrecorded file)")
    v.add_argument("--heads", nargs="+", choices=heads, help="heads to compare (default: all common heads)")
    _add_json(v, "the full report (per head, output and layer)")
    _add_report(v)
    given = v.add_mutually_exclusive_group()
    given.add_argument("--text", action="append", metavar="TEXT",
                       help="tokenize TEXT with the model's vocabulary instead of the probe batch (repeatable)")
    given.add_argument("--inputs", metavar="FILE.npz", help="saved input arrays instead of the probe batch")
    v.add_argument("--text-pair", action="append", metavar="TEXT",
                   help="second segment for the --text of the same position (repeat once per --text)")
    _add_tolerance(v)
    _add_nonfinite(v)
    _add_format_options(v, options, ("read",))
    _add_common(v)

    i = _sub(sub, "inspect", "format, config, head, dtypes, tensors and parameter count of PATH",
             "Read PATH (no verification) and print its format and weights file, head, config, dtypes, "
             "parameter count and tensors. --head, --net and --config read it the way convert would.")
    i.add_argument("path")
    i.add_argument("--from", dest="fmt", choices=list(FORMATS), help="format (default: detected)")
    i.add_argument("--head", choices=heads, help="read this head (e.g. base) instead of the file's own")
    _add_json(i, "the inspection")
    _add_nonfinite(i)
    _add_format_options(i, options, ("read",))
    _add_common(i)

    b = _sub(sub, "batch", "run the verified conversions a plan lists, in parallel (local processes or Ray)",
             "Read PLAN (YAML or JSON: items of src, out, to, head, dtype, verify, options, tokenizer, with "
             "shared defaults) and convert every item, verified. One failing item never stops the others; the "
             "summary says what failed and why. An item whose output records the same source digests and "
             "options is skipped, so a rerun (or an interrupted run) does only the work left.",
             "exit codes: 0 every item converted or skipped, 1 some item's output differs beyond tolerance, "
             "2 some item was unusable.\n" + EPILOG.split("\n", 2)[2])
    b.add_argument("plan", help="the plan file (.yaml/.yml or .json); relative paths in it are relative to its folder")
    b.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="run N items at once in local processes (BLAS threads split between them; default 1)")
    b.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run each item as a task on a Ray cluster: ADDRESS (e.g. ray://head:10001 or auto), or "
                        "without it a local Ray (needs the ray extra)")
    _add_json(b, "every item's outcome")
    _add_common(b)

    f = _sub(sub, "formats", "the formats, heads and runtimes this installation reads, writes and runs",
             "List every format (read, write, run; the heads it holds) and runtime, and whether this "
             "installation has the extra each needs, with the pip command when it does not.")
    _add_json(f, "the catalog")
    _add_common(f)

    d = _sub(sub, "demo", "take a bundled model through every installed format, verifying each hop",
             "The toolkit's main job on an embedded model: convert it through every checkpoint format available "
             "in this installation and export every artifact format, verify each hop, print the table and write "
             "report.json, report.md and drift.png into --out. Hops whose format or framework is missing are "
             "skipped with the reason.")
    d.add_argument("--out", default="demo-out", help="output folder (default: ./demo-out; replaced if it exists)")
    d.add_argument("--head", choices=heads, help="head of the embedded model (default: pretraining)")
    d.add_argument("--runtime", default="numpy", choices=list(RUNTIMES),
                   help="runtime that executes checkpoint sides (default: numpy reference)")
    _add_json(d, "the hop table")
    _add_common(d)
    return parser
