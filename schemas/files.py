"""Reading one file the safe way: only a regular file (a FIFO never blocks, a device is never read
endlessly), at most ``limit`` bytes. The one implementation under config.json, side files
(indexes, tokenizer files, checkpoint state) and whole artifacts; it lives in schemas, the
bottom layer, so every package can use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import BridgeError, FormatError

#: O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (POSIX; absent on Windows)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)


def read_regular(path: str | Path, limit: int, *, what: str = "file",
                 error: type[BridgeError] = FormatError) -> bytes:
    """The bytes of ``path``; raises ``error`` naming it unless it is a regular file of <= ``limit`` bytes."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise error(f"{path}: cannot open the {what} ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: the {what} is not a regular file (a FIFO, device or folder is never read)")
        if st.st_size > limit:
            raise error(f"{path}: the {what} is {st.st_size} bytes, more than the {limit} it may be")
        data = fh.read(min(st.st_size, limit) + 1)   # read(n) reserves n bytes: never more than needed
    if len(data) > limit:
        raise error(f"{path}: the {what} grew past the {limit} bytes it may be while being read")
    return data
