"""Output folders: where a conversion may write, what ``--force`` may replace, and the marker that
says a folder is electra-bridge's own.

Rules: OUT is never the source, its folder, a folder holding the source, or the working
folder (or one holding it). A folder *inside* the source's folder is fine (an ``onnx/``
beside the weights): the source files stay byte-identical. ``--force`` replaces only a
folder whose ``electra-bridge.json`` marker electra-bridge wrote; anything else -- a file, a
folder of the user's -- is refused, never deleted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from electra_bridge.schemas import BridgeError

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
