"""The ``electra-bridge`` command line: convert, verify, inspect, formats, demo.

Exit codes (all commands): 0 success / equal, 1 verification mismatch, 2 unusable input.
Every error is one ``error:`` line on stderr naming the file or option (``--debug`` adds the
traceback of an unexpected one). Progress bars go to stderr only when it is a terminal and
``--quiet`` is not given; frameworks' start-up noise is filtered unless ``--verbose`` (quiet.py).

``--json`` makes stdout exactly one JSON document of one shape for every command, success and
failure alike: five envelope keys, then the command's own fields::

    {"electra_bridge": VERSION, "command": "verify", "ok": true, "exit_code": 0, "error": null, ...}

    convert  out, format, outputs: [{out, format, head, verified, report}] (one per folder written);
             on a mismatch outputs is [] and report holds the failing comparison
    verify   the report (runtimes/report.py Report.to_dict: a, b, atol, rtol, heads, ...)
    inspect  format, path, weights, head, config, num_parameters, dtypes, tensors, assets
    formats  formats: [{format, kind, read, write, run, heads, extra, available, install}], runtimes
    demo     out, source, hops

On an unusable input (exit 2) only the envelope is printed, with the error.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from electra_bridge.schemas import BridgeError

from .. import api
from ..engine.output import tool_version
from ..engine import progress
from .commands import COMMANDS, EXIT_MISMATCH, EXIT_OK, EXIT_UNUSABLE, Outcome
from .parser import build_parser
from .quiet import Quiet

__all__ = ["EXIT_MISMATCH", "EXIT_OK", "EXIT_UNUSABLE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:                 # bare `electra-bridge`: the help, not a usage error
        parser.print_help()
        return EXIT_OK
    if hasattr(signal, "SIGXFSZ"):   # past RLIMIT_FSIZE a write fails (EFBIG, a clean error) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with Quiet(verbose=args.verbose):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("electra_bridge")
        saved_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.ERROR if args.quiet else logging.INFO)
        logger.propagate = False
        progress.configure(False if args.quiet else None)
        try:
            return _run(args)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved_level)
            logger.propagate = True


def _run(args) -> int:
    error, outcome = None, None
    try:
        outcome = COMMANDS[args.command](args)
    except api.VerificationError as exc:   # convert: nothing was written
        error = str(exc)
        fields = {"out": str(args.out), "format": args.to, "outputs": [], "report": exc.report.to_dict()}
        outcome = Outcome(EXIT_MISMATCH, [exc.report.table()], fields)
    except BridgeError as exc:
        error, outcome = str(exc), Outcome(EXIT_UNUSABLE, [])
    except BrokenPipeError:
        return _closed_stdout(EXIT_OK)
    except Exception as exc:  # an input we did not foresee: still one line, exit 2
        if args.debug:
            raise
        error = f"{type(exc).__name__}: {exc} (rerun with --debug for a traceback)"
        outcome = Outcome(EXIT_UNUSABLE, [])
    try:
        _print(args, outcome, error)
    except BrokenPipeError:            # `electra-bridge inspect X | head`: the reader left; that is fine
        return _closed_stdout(outcome.exit_code)
    return outcome.exit_code


def _print(args, outcome: Outcome, error: str | None) -> None:
    if args.json:
        doc = {"electra_bridge": tool_version(), "command": args.command, "ok": outcome.exit_code == EXIT_OK,
               "exit_code": outcome.exit_code, "error": error, **outcome.fields}
        print(json.dumps(doc, indent=2))
    else:
        for line in outcome.lines:
            print(line)
        if not args.quiet:
            for line in outcome.notes:
                print(line)
    sys.stdout.flush()
    if error is not None:
        print(f"error: {error}", file=sys.stderr)


def _closed_stdout(code: int) -> int:
    """stdout's reader is gone: point stdout at /dev/null so the interpreter's final flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return code


if __name__ == "__main__":
    sys.exit(main())
