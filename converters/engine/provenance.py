"""Provenance: what an output folder was made from, recorded in its ``electra-bridge.json``.

The record (written by api.convert beside the model card) holds, besides the marker fields
(tool, version, format, head, dtype, source, source_format) and the verification report:

* ``options``      -- what the conversion was asked for (to, head, dtype, read and write options),
* ``source_files`` -- [{name, size, sha256}] of the source's files (``source_files`` says which),
* ``files``        -- [{name, size, sha256}] of every file written into the folder (the record itself
  excluded),
* ``tensors``      -- {name: {shape, dtype, crc32c}} of the canonical tensors as written (before a
  writer's own layout change), crc32c of their C-order bytes.

``check(folder)`` re-hashes a folder's files against its record (``verify --provenance``);
``same_work(folder, digests, options)`` tells ``batch`` an output is already what it would make.
Hashing streams each file in 1 MiB blocks, so memory stays flat.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import google_crc32c
import numpy as np

from electra_bridge.runtimes import blas
from electra_bridge.schemas import Checkpoint, FormatError

from . import hf_cache
from .output import MARKER

#: side files that belong to a checkpoint wherever its weights file is named explicitly
SIDE_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "checkpoint")


BLOCK = 1 << 20
T = TypeVar("T")


def sha256(path: Path) -> str:
    """The file's sha256. Within one process a file is hashed once while it stays the same file
    (device, inode, size, modification time): batch checks an item's source, then its convert
    records the same digests."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, *identity: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)   # hashlib releases the GIL on large blocks: a hashing thread runs beside the work
    return digest.hexdigest()


def in_background(fn: Callable[..., T], *args) -> Future[T]:
    """``fn(*args)`` in a thread of its own. Hashing is what runs there: hashlib releases the GIL on
    large blocks, so a source or a written file is hashed on the other core while the work goes on."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def digests(paths: Iterable[Path], root: Path) -> list[dict]:
    """[{name (relative to ``root``), size, sha256}] of ``paths``, sorted by name."""
    rows = [{"name": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256(p)} for p in paths]
    return sorted(rows, key=lambda r: r["name"])


def source_files(path: str | Path) -> tuple[Path, list[Path]]:
    """(root, files) of a source: a folder's regular files (not recursing; a Hugging Face cache
    folder is its snapshot), or for a file or TF1 prefix the files named by it (``model.ckpt-1000``:
    its ``.index`` and ``.data-*``) and the side files beside it. Symlinks are followed."""
    path = hf_cache.resolve(Path(path))[0]
    if path.is_dir():
        return path, sorted(p for p in path.iterdir() if p.is_file())
    folder = path.parent
    named = [p for p in folder.iterdir() if p.is_file() and (p == path or p.name.startswith(f"{path.name}."))]
    side = [folder / n for n in SIDE_FILES if (folder / n).is_file()]
    return folder, sorted({*named, *side})


def source_digests(path: str | Path) -> list[dict]:
    root, files = source_files(path)
    return digests(files, root)


def written_digests(folder: Path) -> list[dict]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER]
    return digests(files, folder)


def crc32c(array: np.ndarray) -> str:
    """crc32c of ``array``'s C-order bytes, as hex. The library reads the array's buffer in place
    (a uint8 view: ml_dtypes types such as bfloat16 export no buffer format); ``tobytes()`` would
    copy every tensor once more, a fresh allocation as large as the checkpoint over a conversion."""
    return f"{google_crc32c.extend(0, blas.contiguous(array).reshape(-1).view(np.uint8)):08x}"


def digesting(ckpt: Checkpoint, sink: dict[str, dict]) -> Checkpoint:
    """The same checkpoint whose tensors, when the writer loads them, record {shape, dtype, crc32c}
    into ``sink``: the checksums cost no second read."""
    def record(name: str, array: np.ndarray) -> None:
        sink[name] = {"shape": list(array.shape), "dtype": array.dtype.name, "crc32c": crc32c(array)}
    return ckpt.on_load(record)


def asked(to: str, head: str | None, dtype: str | None, verify: bool, read_options: Mapping,
          write_options: Mapping, tokenizer: str | Path | None) -> dict:
    """The options of a conversion as its record stores them (and batch compares them)."""
    return json.loads(json.dumps({"to": to, "head": head, "dtype": dtype, "verify": verify,
                                  "read_options": dict(read_options), "write_options": dict(write_options),
                                  "tokenizer": str(tokenizer) if tokenizer else None}, sort_keys=True, default=str))


def load(folder: Path) -> dict:
    """The record of ``folder``; FormatError when there is none or it is not ours."""
    marker = Path(folder) / MARKER
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{folder}: no {MARKER} (not an electra-bridge output folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{marker}: unreadable provenance record ({exc})") from None
    if not isinstance(record, dict) or record.get("tool") != "electra-bridge":
        raise FormatError(f"{marker}: not an electra-bridge provenance record")
    return record


def check(folder: Path) -> list[str]:
    """What differs between ``folder``'s files and its record: one line per changed, missing or
    unrecorded file; [] when every file is as written."""
    record = load(folder)
    if "files" not in record:
        raise FormatError(f"{Path(folder) / MARKER}: the record has no file digests (written by an older version)")
    recorded = {r["name"]: r for r in record["files"]}
    present = {r["name"]: r for r in written_digests(Path(folder))}
    problems = [f"{name}: missing" for name in sorted(set(recorded) - set(present))]
    problems += [f"{name}: not in the record" for name in sorted(set(present) - set(recorded))]
    problems += [f"{name}: changed (sha256 {present[name]['sha256'][:12]}..., recorded {recorded[name]['sha256'][:12]}...)"
                 for name in sorted(set(present) & set(recorded)) if present[name]["sha256"] != recorded[name]["sha256"]]
    return problems


def same_work(folder: Path, sources: list[dict], options: Mapping) -> bool:
    """True when ``folder`` is an intact output made from exactly these source files with these options.
    The folder's files are hashed last, only when the record matches: a stale output is redone anyway."""
    try:
        record = load(folder)
    except FormatError:
        return False
    verified = record.get("verification") is not None or options.get("verify") is False
    if not (verified and record.get("source_files") == sources and record.get("options") == options):
        return False
    try:
        return not check(folder)
    except FormatError:
        return False
