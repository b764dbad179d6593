"""Which files a read may open: regular files inside the checkpoint's folder, of bounded size.

Every byte electra-bridge reads comes from inside the source folder (the folder given, or the
folder of the file given). ``confined`` refuses a path whose real location (symlinks followed)
is outside that folder and anything that is not a regular file: a FIFO would block ``open``
forever, a device (``/dev/zero``) never ends. Symlinks that stay inside the folder are fine.
One exception, by layout: in a Hugging Face cache snapshot (``models--org--name/snapshots/<commit>/``,
engine/hf_cache.py) every file is a symlink into ``models--org--name/blobs/``, so there the folder a
read is confined to is the ``models--org--name`` folder; a link leaving that is refused as ever.
``within`` is the location test alone (a shard index's file names: inside the index's folder, the
cache repo folder for a cache snapshot). ``read_small`` reads a small side file (index, state file)
with a size limit, never blocking. ``mapped_bytes`` is how the safetensors, .bin and TF1 readers take
a tensor's bytes.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
import weakref
from pathlib import Path

import numpy as np

from electra_bridge.schemas import FormatError
from electra_bridge.schemas.files import read_regular

from . import hf_cache

#: a shard index, TF1 state file or other side file larger than this is not one
MAX_SIDE_FILE_BYTES = 64 << 20


def confinement_root(folder: Path) -> Path:
    """The resolved folder reads below ``folder`` are confined to: ``folder`` itself, or the
    ``models--org--name`` folder when ``folder`` is (in) a hub cache snapshot."""
    return hf_cache.repo_root(folder) or Path(folder).resolve()


def source_root(path: Path) -> Path:
    """The folder a read of ``path`` (a folder or a file) is confined to (resolved)."""
    path = Path(path)
    return confinement_root(path if path.is_dir() else path.parent)


def _real(path: Path) -> Path | None:
    """The real location of ``path`` (symlinks followed), or None when it has none (a NUL byte, a loop)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def within(path: Path, root: Path) -> bool:
    """The real location of ``path`` (symlinks followed) is inside ``confinement_root(root)``."""
    root, real = confinement_root(root), _real(path)
    return real is not None and (real == root or root in real.parents)


def confined(path: Path, root: Path, what: str = "file") -> Path:
    """``path`` if it is a regular file whose real location is inside ``root`` (widened to the
    repo folder when ``root`` is a hub cache snapshot); else FormatError."""
    path = Path(path)
    if not within(path, root):
        real = _real(path)
        where = f"resolves to {real}, outside {confinement_root(root)}" if real is not None else "cannot be resolved"
        raise FormatError(f"{path}: the {what} {where}; electra-bridge reads only "
                          "files inside the checkpoint's folder (copy the file there instead of a symlink)")
    real = path.resolve()
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


#: mappings alive at once, at most, as a share of the file-descriptor limit: Python's mmap keeps a
#: duplicate descriptor per mapping, and electra-large's 393 tensors would pass a soft limit of 256
#: (macOS's default) on their own
MAP_SHARE_OF_FD_LIMIT = 4
_maps = {"live": 0}
_maps_lock = threading.Lock()


def map_budget() -> int:
    """How many tensor mappings may be alive at once (a quarter of the soft RLIMIT_NOFILE)."""
    try:
        import resource
    except ImportError:   # not a POSIX system
        return 64
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(soft // MAP_SHARE_OF_FD_LIMIT, 0)


def _unmapped() -> None:
    with _maps_lock:
        _maps["live"] -= 1


def mapped_bytes(path: Path, offset: int, nbytes: int) -> np.ndarray | None:
    """Bytes ``offset .. offset + nbytes`` of ``path`` as a read-only uint8 array (None when the file
    ends before them or ``offset`` is negative), mapped from the file where it can be.

    A mapping, not a read: the array is the page cache's own pages, so loading a tensor allocates no
    memory and copies nothing (reading into a fresh array did both, and on a VM first-touched memory
    is the slow part of a conversion). Each array holds its own mapping, unmapped when the array and
    every view of it are gone, so a tensor's pages leave the process's RSS when the tensor does, as a
    read array's would. Past ``map_budget()`` live mappings (each holds a file descriptor) the bytes
    are read into a fresh array instead, read-only all the same. The file must not be truncated while
    its mapped arrays live (SIGBUS, as for any mapping); the size is checked when the mapping is made."""
    with open(path, "rb") as fh:
        if offset < 0 or offset + nbytes > os.fstat(fh.fileno()).st_size:
            return None
        if nbytes == 0:
            return np.empty(0, dtype=np.uint8)
        with _maps_lock:
            mapping = _maps["live"] < map_budget()
            _maps["live"] += mapping
        if not mapping:
            fh.seek(offset)
            raw = np.empty(nbytes, dtype=np.uint8)
            if fh.readinto(memoryview(raw)) != nbytes:
                return None
            raw.flags.writeable = False
            return raw
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            view = mmap.mmap(fh.fileno(), offset - start + nbytes, access=mmap.ACCESS_READ, offset=start)
        except BaseException:
            _unmapped()
            raise
    weakref.finalize(view, _unmapped)
    if hasattr(mmap, "MADV_WILLNEED"):
        view.madvise(mmap.MADV_WILLNEED)   # read ahead now: a file not yet cached is read in large requests
    return np.frombuffer(view, dtype=np.uint8, count=nbytes, offset=offset - start)
