"""flax.serialization's msgpack read lazily: the structure is walked, no array is decoded until loaded.

``scan(path)`` reads a ``flax_model.msgpack`` marker by marker (msgpack spec: maps, strings,
ints, floats, nil/bool, bin, arrays, ext), records for every array leaf (ExtType 1, whose
payload is ``[shape, dtype name, bin]``, msgpack_flax.py) its shape, dtype and the file offset
of its bytes, and seeks over those bytes. ``NativeTensor.load`` then reads one array's byte
range into a fresh array: memory holds the tree of names and one array at a time, never the
file (the eager ``msgpack_flax.decode`` held every array at once).

The result equals ``msgpack_flax.decode``'s where that succeeds (tests/test_streaming.py checks
it on mutated files): a repeated key replaces the earlier value, as a dict does, chunked arrays
(``__msgpack_chunked_array__``) are joined on load, and a leaf that is not an array is named.
Hardening: every length is checked against the bytes left before anything is read or allocated
(a map claiming 2**32 entries, a bin claiming 4 GiB), nesting is bounded (MAX_DEPTH), keys must be
UTF-8 strings, an array's bytes must be exactly ``prod(shape) x itemsize`` of a numeric dtype, and
the parameter map must end the file.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack
import numpy as np

from electra_bridge.schemas import FormatError

from ..engine.format import NativeTensor
from .msgpack_flax import _DTYPES, EXT_COMPLEX, EXT_NDARRAY, EXT_NPSCALAR, flatten, payload_header

#: deeper than any parameter tree (flax nests by module path: ~8 levels for ELECTRA)
MAX_DEPTH = 64
#: enough of an ext payload for flax's ``[shape, dtype]`` header
_HEADER_PREFIX = 512
_FIXED = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
          0xCA: ">f", 0xCB: ">d"}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_NUMERIC_KINDS = frozenset("biufc")


@dataclass(frozen=True)
class _Leaf:
    """One array: where its C-order bytes are in the file."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    nbytes: int


@dataclass(frozen=True)
class _Other:
    """A value that is no parameter (a list, bytes, another ext type): its kind, for the message."""

    kind: str


class _Reader:
    """Sequential reads of a file, each length checked against the bytes left first."""

    def __init__(self, fh: BinaryIO, size: int):
        self.fh, self.size, self.pos = fh, size, 0

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise FormatError(f"{what} at byte {self.pos}, but only {self.size - self.pos} bytes are left "
                              "(the msgpack data ends early: truncated file?)")

    def take(self, n: int, what: str = "a value") -> bytes:
        self.need(n, f"{what} needs {n} bytes")
        data = self.fh.read(n)
        if len(data) != n:
            raise FormatError("the msgpack data ends early (truncated file?)")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        self.need(n, f"{what} needs {n} bytes")
        self.fh.seek(n, os.SEEK_CUR)
        self.pos += n

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]


def _length(r: _Reader, marker: int, widths: dict[int, str]) -> int:
    return r.unpack(widths[marker])


def _array_leaf(r: _Reader, length: int) -> _Leaf:
    """Flax's array entry: parse ``[shape, dtype]`` from the payload's first bytes, seek over the rest."""
    start = r.pos
    prefix = r.take(min(length, _HEADER_PREFIX), "an array entry")
    try:
        shape, dtype_name, data_at, size = payload_header(prefix, length)
        name = dtype_name.decode("ascii")
        dtype = _DTYPES.get(name) or np.dtype(name)
        dims = tuple(int(d) for d in shape)
    except (ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError, msgpack.UnpackException) as exc:
        raise FormatError(f"an array entry is not flax's (shape, dtype, bytes) encoding: {exc}") from None
    if dtype not in _DTYPES.values() and (dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None):
        raise FormatError(f"an array entry is not flax's (shape, dtype, bytes) encoding: dtype {name!r}")
    if any(isinstance(d, bool) or d < 0 for d in shape) or math.prod(dims) * dtype.itemsize != size:
        raise FormatError(f"an array entry is not flax's (shape, dtype, bytes) encoding: shape {list(dims)} of "
                          f"{name} needs {math.prod(dims) * dtype.itemsize} bytes, it stores {size}")
    r.skip(length - len(prefix), "an array entry")
    return _Leaf(dims, dtype, start + data_at, size)


def _ext(r: _Reader, marker: int):
    if marker in _FIXEXT:
        length = _FIXEXT[marker]
    else:
        length = _length(r, marker, {0xC7: ">B", 0xC8: ">H", 0xC9: ">I"})
    code = r.unpack(">b")
    if code == EXT_NDARRAY:
        return _array_leaf(r, length)
    r.skip(length, "an ext value")
    return _Other({EXT_COMPLEX: "complex", EXT_NPSCALAR: "numpy scalar"}.get(code, f"msgpack ExtType {code}"))


def _string(r: _Reader, n: int) -> str:
    try:
        return r.take(n, "a string").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not a msgpack file: a string at byte {r.pos - n} is not UTF-8 ({exc})") from None


def _value(r: _Reader, depth: int):
    """The value at the reader's position: a dict (a map), a _Leaf, a Python scalar or an _Other."""
    if depth > MAX_DEPTH:
        raise FormatError(f"the msgpack tree nests deeper than {MAX_DEPTH} levels; no parameter tree does")
    at = r.pos
    b = r.take(1, "a marker")[0]
    if b <= 0x7F or b >= 0xE0:
        return b if b <= 0x7F else b - 0x100
    if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):
        return _map(r, b & 0x0F if b <= 0x8F else _length(r, b, {0xDE: ">H", 0xDF: ">I"}), depth)
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):
        return _string(r, b & 0x1F if b <= 0xBF else _length(r, b, {0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}))
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
        n = b & 0x0F if b <= 0x9F else _length(r, b, {0xDC: ">H", 0xDD: ">I"})
        r.need(n, f"an array claims {n} items")
        for _ in range(n):
            _value(r, depth + 1)
        return _Other("list")
    if b in (0xC4, 0xC5, 0xC6):
        r.skip(_length(r, b, {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}), "a bin value")
        return _Other("bytes")
    if b in _FIXEXT or b in (0xC7, 0xC8, 0xC9):
        return _ext(r, b)
    if b in _FIXED:
        return r.unpack(_FIXED[b])
    if b in (0xC0, 0xC2, 0xC3):
        return {0xC0: None, 0xC2: False, 0xC3: True}[b]
    raise FormatError(f"not a msgpack file: byte {at} holds {b:#x}, which msgpack never uses")


def _map(r: _Reader, n: int, depth: int) -> dict:
    r.need(2 * n, f"a map claims {n} entries")   # a key and a value: at least a byte each
    out: dict = {}
    for _ in range(n):
        at = r.pos
        key = _value(r, depth + 1)
        if not isinstance(key, str):
            raise FormatError(f"a map key at byte {at} is a {_kind(key)}, not a string; flax's keys are strings")
        out[key] = _value(r, depth + 1)   # a repeated key: the last value wins, as in a decoded dict
    return out


def _kind(value) -> str:
    return value.kind if isinstance(value, _Other) else type(value).__name__


@dataclass(frozen=True)
class _Chunks:
    """A chunked array: its shape and the 1-D parts joined on load."""

    shape: tuple[int, ...]
    dtype: np.dtype
    parts: tuple[_Leaf, ...]


def _chunked(node: Mapping, where: str) -> _Chunks:
    try:
        shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
        parts = tuple(node["chunks"][str(i)] for i in range(len(node["chunks"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: malformed chunked array ({exc})") from None
    if not parts or not all(isinstance(p, _Leaf) and len(p.shape) == 1 and p.dtype == parts[0].dtype for p in parts):
        raise FormatError(f"{where}: malformed chunked array (its chunks must be 1-D arrays of one dtype)")
    if any(d < 0 for d in shape) or math.prod(shape) != sum(p.shape[0] for p in parts):
        raise FormatError(f"{where}: malformed chunked array (shape {list(shape)} does not hold its chunks)")
    return _Chunks(shape, parts[0].dtype, parts)


def _read(path: Path, leaf: _Leaf) -> np.ndarray:
    raw = np.empty(leaf.nbytes, dtype=np.uint8)
    with open(path, "rb") as fh:
        fh.seek(leaf.offset)
        if (fh.readinto(memoryview(raw)) if raw.size else 0) != raw.size:
            raise FormatError(f"{path} is truncated: an array runs past its end")
    return raw.view(leaf.dtype).reshape(leaf.shape)


def _loader(path: Path, entry: _Leaf | _Chunks):
    if isinstance(entry, _Leaf):
        return lambda: _read(path, entry)
    return lambda: np.concatenate([_read(path, p) for p in entry.parts]).reshape(entry.shape)


def scan(path: Path) -> dict[str, NativeTensor]:
    """``{"/"-joined path: NativeTensor}`` of one msgpack file, each array read only by its ``load()``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(7)
            if not head:
                raise FormatError(f"{path} is empty")
            if head == b"version":
                raise FormatError(f"{path} is a git-lfs pointer, not the weights: run `git lfs pull`")
            fh.seek(0)
            r = _Reader(fh, size)
            try:
                tree = _value(r, 0)
                if not isinstance(tree, dict):
                    raise FormatError(f"the msgpack top level is a {_kind(tree)}, not a map of parameters")
                if r.pos != size:
                    raise FormatError("extra data after the parameter map")
                entries = dict(flatten(tree, "msgpack", unchunk=_chunked, leaves=(_Leaf, _Chunks), kind=_kind))
            except FormatError as exc:
                raise FormatError(f"{path}: {exc}") from None
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc}") from exc
    return {name: NativeTensor(name, e.shape, e.dtype, _loader(path, e)) for name, e in entries.items()}
