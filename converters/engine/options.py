"""Format-specific command-line options, declared as data by each format module.

A format lists them in ``FORMAT.options``; the CLI adds each once to ``convert`` (and ``verify``
for read options) and the engine hands the parsed values to that format's read or write,
refusing an option the format does not declare.
"""

from __future__ import annotations

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
