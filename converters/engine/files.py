"""Which files a read may open: regular files inside the checkpoint's folder, of bounded size.

Every byte electra-bridge reads comes from inside the source folder (the folder given, or the
folder of the file given). ``confined`` refuses a path whose real location (symlinks followed)
is outside that folder and anything that is not a regular file: a FIFO would block ``open``
forever, a device (``/dev/zero``) never ends. Symlinks that stay inside the folder are fine.
``read_small`` reads a small side file (index, state file) with a size limit, never blocking.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from electra_bridge.schemas import FormatError
from electra_bridge.schemas.files import read_regular

#: a shard index, TF1 state file or other side file larger than this is not one
MAX_SIDE_FILE_BYTES = 64 << 20


def source_root(path: Path) -> Path:
    """The folder a read of ``path`` is confined to."""
    path = Path(path)
    return (path if path.is_dir() else path.parent).resolve()


def confined(path: Path, root: Path, what: str = "file") -> Path:
    """``path`` if it is a regular file whose real location is inside ``root``; else FormatError."""
    path = Path(path)
    real = path.resolve()
    if real != root and root not in real.parents:
        raise FormatError(f"{path}: the {what} resolves to {real}, outside {root}; electra-bridge reads only "
                          "files inside the checkpoint's folder (copy the file there instead of a symlink)")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise FormatError(f"{path}: cannot open the {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(mode):
        raise FormatError(f"{path}: the {what} is not a regular file (a FIFO, device or folder is never opened)")
    return path


def read_small(path: Path, limit: int = MAX_SIDE_FILE_BYTES) -> bytes:
    """The bytes of a regular side file of at most ``limit`` bytes (opened non-blocking: a FIFO never blocks)."""
    return read_regular(path, limit)
