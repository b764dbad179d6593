"""``electra-bridge formats``: what this installation can read, write and run, from the registry.

Each row is one format: whether it is read (checkpoints), written, run (artifacts run in their
own runtime; checkpoints run in any runtime of ``RUNTIMES``), the heads it holds, and the extra
it needs with whether this installation has it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from electra_bridge.runtimes.runner import RUNTIME_EXTRAS, RUNTIMES
from electra_bridge.schemas import HEADS

from ..engine import extras
from ..engine.format import CheckpointFormat
from ..formats import all_formats


@dataclass(frozen=True)
class Row:
    format: str
    kind: str                 # "checkpoint" | "artifact"
    read: bool
    write: bool
    run: bool
    heads: tuple[str, ...]
    extra: str | None         # the pip extra it needs (None: the core)
    missing: tuple[str, ...]  # modules of that extra not installed here

    @property
    def available(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict:
        return {**asdict(self), "heads": list(self.heads), "missing": list(self.missing),
                "available": self.available, "install": self.install}

    @property
    def install(self) -> str | None:
        return f"pip install 'electra-bridge[{self.extra}]'" if self.missing and self.extra else None


def rows() -> list[Row]:
    out = []
    for fmt in all_formats():
        checkpoint = isinstance(fmt, CheckpointFormat)
        missing = tuple(extras.missing_modules(fmt.extra))
        out.append(Row(fmt.name, fmt.kind, checkpoint, True, not checkpoint, tuple(fmt.heads), fmt.extra, missing))
    return out


def runtimes() -> list[dict]:
    """Each runtime of ``--runtime``, its extra and whether it is installed."""
    found = []
    for name in RUNTIMES:
        extra = RUNTIME_EXTRAS.get(name)
        missing = extras.missing_modules(extra)
        found.append({"runtime": name, "extra": extra, "available": not missing,
                      "install": f"pip install 'electra-bridge[{extra}]'" if missing else None})
    return found


def table(found: list[Row]) -> list[str]:
    lines = [f"{'format':<14}{'kind':<12}{'read':<6}{'write':<7}{'run':<5}{'this install':<14}heads"]
    for r in found:
        here = "yes" if r.available else "no"
        lines.append(f"{r.format:<14}{r.kind:<12}{_yes(r.read):<6}{_yes(r.write):<7}{_yes(r.run):<5}{here:<14}"
                     f"{_heads(r.heads)}")
    lines += [f"  {r.format}: {r.install}" for r in found if r.install]
    lines.append("")
    lines.append("runtimes (--runtime, for checkpoints): " + ", ".join(
        r["runtime"] + ("" if r["available"] else f" (no: {r['install']})") for r in runtimes()))
    lines.append("checkpoints run in any runtime; artifacts run in their own (ONNX Runtime, TorchScript, torch.export)")
    return lines


def _heads(heads: tuple[str, ...]) -> str:
    left_out = [h for h in HEADS if h not in heads]
    if not left_out:
        return "all"
    return ", ".join(heads) if len(heads) <= len(left_out) else f"all but {', '.join(left_out)}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"
