"""Format-specific command-line options, declared as data by each format module.

A format lists them in ``FORMAT.options``; the CLI adds each once to ``convert`` (and ``verify``
for read options) and the engine hands the parsed values to that format's read or write,
refusing an option the format does not declare.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    flag: str                    # e.g. "--net"
    stage: str                   # "read" (passed to read) or "write" (passed to write)
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra argparse arguments (choices, type, ...)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


#: read options every format takes: engine.pipeline.read's own keywords (``--config`` an HF config.json
#: for any source, ``--allow-nonfinite``), whichever format declares the flag
ENGINE_READ_OPTIONS = frozenset({"config", "allow_nonfinite"})


def accepted(options: Iterable[Option], stage: str) -> set[str]:
    """The dests a format with ``options`` takes at ``stage`` ("read": also ENGINE_READ_OPTIONS)."""
    dests = {o.dest for o in options if o.stage == stage}
    return dests | ENGINE_READ_OPTIONS if stage == "read" else dests
