"""Output folders: where a conversion may write, what ``--force`` may replace, and the marker that
says a folder is electra-bridge's own.

Rules: OUT is never the source, its folder, a folder holding the source, or the working
folder (or one holding it). A folder *inside* the source's folder is fine (an ``onnx/``
beside the weights): the source files stay byte-identical. ``--force`` replaces only a
folder whose ``electra-bridge.json`` marker electra-bridge wrote; anything else -- a file, a
folder of the user's -- is refused, never deleted.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from electra_bridge.schemas import BridgeError, FormatError

MARKER = "electra-bridge.json"


def tool_version() -> str:
    try:
        return metadata.version("electra-bridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_marker(folder: Path, record: Mapping[str, object]) -> Path:
    path = folder / MARKER
    path.write_text(json.dumps({"tool": "electra-bridge", "version": tool_version(), **record}, indent=2,
                               sort_keys=True) + "\n")
    return path


def is_own_output(path: Path) -> bool:
    """True for a real folder (not a symlink) holding the marker electra-bridge writes."""
    marker = path / MARKER
    if path.is_symlink() or not path.is_dir() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("tool") == "electra-bridge"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def check_target(out: Path, sources: Sequence[Path], *, force: bool) -> None:
    """Raise BridgeError unless writing (and, with ``force``, replacing) ``out`` is safe."""
    target = out.resolve()
    for src in sources:
        resolved = Path(src).resolve()
        folder = resolved if resolved.is_dir() else resolved.parent
        if target in (resolved, folder) or resolved.is_relative_to(target):
            raise BridgeError(f"{out} is, or holds, the source {src}: writing there would replace the source; "
                              "choose an output folder outside it (a new subfolder of it is fine)")
    cwd = Path.cwd().resolve()
    if cwd.is_relative_to(target):
        raise BridgeError(f"{out} is, or holds, the working folder; choose a new output folder")
    if not (out.exists() or out.is_symlink()):
        return
    if not force:
        raise BridgeError(f"{out} already exists; pass --force to replace it")
    if not is_own_output(out):
        raise BridgeError(f"{out} exists and is not an output of electra-bridge (no {MARKER} in it); --force "
                          "replaces only electra-bridge's own output folders: remove it yourself or choose another")


# ---- the staging folder -------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _clean_stale_staging(out: Path) -> None:
    """Remove ``.OUT.partial-PID`` folders a killed run left beside ``out`` (only ours: that name
    pattern, a real folder, and no process PID alive any more)."""
    prefix = f".{out.name}.partial-"
    for old in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = old.name[len(prefix):]
        if pid.isdigit() and old.is_dir() and not old.is_symlink() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def staging_dir(out: Path) -> Path:
    """A fresh ``.OUT.partial-PID`` folder beside ``out``: everything is written there and renamed to
    ``out`` only when complete (and verified)."""
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        _clean_stale_staging(out)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise FormatError(f"{out}: cannot create the output folder ({exc.strerror}: {exc.filename})") from None
    return tmp


class _StagingNames(logging.Filter):
    """Log records name OUT, never the staging folder: INFO records about the staging folder (a
    read-back saying what it found) are dropped, others have the staging path replaced by OUT."""

    def __init__(self, tmp: Path, out: Path):
        super().__init__()
        self.tmp, self.out = str(tmp), str(out)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.tmp not in message:
            return True
        if record.levelno <= logging.INFO:
            return False
        record.msg, record.args = message.replace(self.tmp, self.out), None
        return True


@contextmanager
def naming_out(tmp: Path, out: Path) -> Iterator[None]:
    """Within the block, messages (log records on our and the root logger's handlers, and the
    BridgeError raised) name ``out`` where they would name the staging folder ``tmp``."""
    names = _StagingNames(tmp, out)
    handlers = [*logging.getLogger("electra_bridge").handlers, *logging.getLogger().handlers]
    for handler in handlers:
        handler.addFilter(names)
    try:
        yield
    except Exception as exc:   # ours and a framework's alike (an ONNX Runtime load error names the file)
        exc.args = tuple(a.replace(str(tmp), str(out)) if isinstance(a, str) else a for a in exc.args)
        raise
    finally:
        for handler in handlers:
            handler.removeFilter(names)
