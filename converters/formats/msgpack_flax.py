"""flax.serialization's msgpack encoding without JAX or Flax: decode a file into arrays, stream arrays into one.

The encoding (flax 0.8-0.12; transformers' ``save_pretrained`` calls
``flax.serialization.to_bytes(params)``): one msgpack map, nested by module path, string
keys everywhere (layer indices are ``"0"``, ``"1"``). Leaves are msgpack ExtType code 1
whose payload is itself msgpack: the array ``[shape, dtype name, C-order bytes]``. Code 3
is a numpy scalar in the same encoding, code 2 a Python complex ``[real, imag]``; neither
is a parameter. Arrays above ``MAX_CHUNK_SIZE`` bytes are stored as
``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": flat part, ...}}``.

Here a tree is flat: ``{"/"-joined path: array}``. Decoding gives each array as a view of
its stored bytes (``bfloat16`` as ``ml_dtypes.bfloat16``, widening is the caller's);
encoding writes keys sorted at every level, as flax does for transformers' params, so the
bytes equal flax's.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import ml_dtypes
import msgpack
import numpy as np

from electra_bridge.schemas import FormatError

SEP = "/"
#: flax.serialization's ExtType codes
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3
#: flax.serialization.MAX_CHUNK_SIZE: msgpack caps one object at 2**31-1 bytes, flax splits arrays above 2**30
MAX_CHUNK_SIZE = 2**30
CHUNKED = "__msgpack_chunked_array__"
READ_SIZE = 1 << 20
#: dtype names numpy does not know by itself (jax's bfloat16 is ml_dtypes')
_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16)}
#: msgpack bin markers -> width of their length field
_BIN_LENGTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}

Leaf = TypeVar("Leaf")


# ---- decoding -------------------------------------------------------------------------------------

def payload_header(prefix: bytes, length: int) -> tuple[list, bytes, int, int]:
    """(shape, dtype name, offset of the array bytes, their size) of flax's inner ``[shape, dtype, bin]``,
    from the first bytes of a ``length``-byte payload (512 hold shape and dtype name); ValueError if
    it is not that encoding or the bytes do not end the payload exactly."""
    header = msgpack.Unpacker(raw=True, max_buffer_size=4096)  # the default buffer is 1 MiB, per array
    header.feed(prefix[:512])  # shape + dtype name: a few dozen bytes
    if header.read_array_header() != 3:
        raise ValueError("expected a 3-item array")
    shape, dtype_name = header.unpack(), header.unpack()
    at = header.tell()
    width = _BIN_LENGTH.get(prefix[at])
    if width is None:
        raise ValueError(f"expected bin data, found marker {prefix[at]:#x}")
    if at + 1 + width > len(prefix):
        raise ValueError("the bin length runs past the entry")
    size = int.from_bytes(prefix[at + 1:at + 1 + width], "big")
    start = at + 1 + width
    if start + size != length:
        raise ValueError("array bytes do not end the entry")
    return shape, dtype_name, start, size


def _split_payload(data: bytes) -> tuple[list, bytes, memoryview]:
    """(shape, dtype name, raw bytes) of flax's inner ``[shape, dtype, bin]`` without copying the bytes.

    The small header is unpacked by msgpack; the bin's bytes are returned as a view into
    ``data``, so an array costs its ext payload only (no second copy)."""
    shape, dtype_name, start, _ = payload_header(data, len(data))
    return shape, dtype_name, memoryview(data)[start:]


def _array_from_payload(data: bytes) -> np.ndarray:
    try:
        shape, dtype_name, raw = _split_payload(data)
        name = dtype_name.decode("ascii")
        dtype = _DTYPES.get(name) or np.dtype(name)
        return np.frombuffer(raw, dtype=dtype).reshape(tuple(int(d) for d in shape))
    except (ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError, msgpack.UnpackException) as exc:
        raise FormatError(f"an array entry is not flax's (shape, dtype, bytes) encoding: {exc}") from None


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_NDARRAY:
        return _array_from_payload(data)
    if code == EXT_NPSCALAR:
        return _array_from_payload(data)[()]
    if code == EXT_COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _unchunk(node: Mapping, where: str) -> np.ndarray:
    try:
        shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
        parts = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
        return np.concatenate(parts).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: malformed chunked array ({exc})") from None


def flatten(node: Mapping, source: str, *, unchunk: Callable[[Mapping, str], Any] = _unchunk,
            leaves: type | tuple[type, ...] = np.ndarray, kind: Callable[[Any], str] = lambda v: type(v).__name__,
            prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(``/``-joined name, leaf) of every leaf of a parameter tree; ``unchunk`` joins flax's chunked
    arrays, ``leaves`` are the leaf types (arrays here, offsets in msgpack_lazy.py), anything else
    is refused naming its ``kind``."""
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and CHUNKED in value:
            value = unchunk(value, f"{source}: {name}")
        if isinstance(value, Mapping):
            yield from flatten(value, source, unchunk=unchunk, leaves=leaves, kind=kind, prefix=name + SEP)
        elif isinstance(value, leaves):
            yield name, value
        else:
            raise FormatError(f"{source}: entry {name!r} is a {kind(value)}, not an array; "
                              "this is not a transformers Flax parameter file")


def _size(fh: BinaryIO) -> int:
    here = fh.tell()
    end = fh.seek(0, 2)
    fh.seek(here)
    return end


def decode(source: bytes | bytearray | memoryview | BinaryIO) -> dict[str, np.ndarray]:
    """msgpack bytes or a binary file -> {"/"-joined path: array}, as flax.serialization.msgpack_restore.

    Streams through msgpack.Unpacker: besides the decoded arrays, memory holds one read
    buffer and the largest single array's encoding, never the whole file.
    """
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    unpacker = msgpack.Unpacker(fh, ext_hook=_ext_hook, raw=False, strict_map_key=False, read_size=READ_SIZE,
                                max_buffer_size=2**31 - 1)  # msgpack's own per-object ceiling
    try:
        tree = unpacker.unpack()
    except msgpack.OutOfData:
        raise FormatError("the msgpack data ends early (truncated file?)") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:   # TypeError: an unhashable map key
        raise FormatError(f"not a msgpack file: {exc}") from None
    if not isinstance(tree, Mapping):
        raise FormatError(f"the msgpack top level is a {type(tree).__name__}, not a map of parameters")
    if unpacker.tell() != _size(fh):
        raise FormatError("extra data after the parameter map")
    return dict(flatten(tree, "msgpack"))


def read_file(path: Path) -> dict[str, np.ndarray]:
    """Every array of one msgpack file; empty files and git-lfs pointers get their own message."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(7)
            if not head:
                raise FormatError(f"{path} is empty")
            if head == b"version":
                raise FormatError(f"{path} is a git-lfs pointer, not the weights: run `git lfs pull`")
            fh.seek(0)
            try:
                return decode(fh)
            except FormatError as exc:
                raise FormatError(f"{path}: {exc}") from None
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc}") from exc


# ---- encoding -------------------------------------------------------------------------------------

def _array_payload(arr: np.ndarray) -> bytes:
    """flax's ``_ndarray_to_bytes``: msgpack of (shape, dtype name, C-order bytes)."""
    return msgpack.packb((arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True)


def _leaf(arr: np.ndarray) -> Any:
    """One array as flax packs it: an ExtType, or the chunked dict above MAX_CHUNK_SIZE bytes."""
    if arr.size * arr.dtype.itemsize <= MAX_CHUNK_SIZE:
        return msgpack.ExtType(EXT_NDARRAY, _array_payload(arr))
    step = max(1, MAX_CHUNK_SIZE // arr.dtype.itemsize)
    flat = arr.reshape(-1)
    chunks = [flat[i:i + step] for i in range(0, flat.size, step)]
    return {CHUNKED: True, "shape": {str(i): d for i, d in enumerate(arr.shape)},
            "chunks": {str(i): msgpack.ExtType(EXT_NDARRAY, _array_payload(c)) for i, c in enumerate(chunks)}}


def _header(fixed: Mapping[int, int], widths: tuple[tuple[int, int, str], ...], n: int) -> bytes:
    if n in fixed:
        return bytes([fixed[n]])
    marker, fmt = next((m, f) for limit, m, f in widths if n < limit)
    return struct.pack(fmt, marker, n)


def _write_array(fh: BinaryIO, arr: np.ndarray) -> None:
    """``packer.pack(_leaf(arr))``'s bytes, written without building them: the ext and bin headers msgpack
    would emit, then the array's C-order bytes straight from the array (no payload copy, no packed
    copy; a non-contiguous view -- a transposed kernel -- is made contiguous once)."""
    if arr.size * arr.dtype.itemsize > MAX_CHUNK_SIZE:
        fh.write(msgpack.packb(_leaf(arr), use_bin_type=True))
        return
    data = arr if arr.flags.c_contiguous else arr.copy(order="C")   # (ascontiguousarray makes 0-d 1-d)
    inner = (b"\x93" + msgpack.packb(data.shape, use_bin_type=True) + msgpack.packb(data.dtype.name)
             + _header({}, ((1 << 8, 0xC4, ">BB"), (1 << 16, 0xC5, ">BH"), (1 << 32, 0xC6, ">BI")), data.nbytes))
    size = len(inner) + data.nbytes
    ext = _header({1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8},
                  ((1 << 8, 0xC7, ">BB"), (1 << 16, 0xC8, ">BH"), (1 << 32, 0xC9, ">BI")), size)
    fh.write(ext + bytes([EXT_NDARRAY]) + inner)
    fh.write(data.reshape(-1).view(np.uint8) if data.size else b"")


def _nest(leaves: Mapping[str, Leaf]) -> dict:
    """{"a/b/c": leaf} -> nested dict."""
    root: dict = {}
    for name, leaf in leaves.items():
        node = root
        *parents, last = name.split(SEP)
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return root


def _pack_tree(tree: Mapping[str, Any], packer: msgpack.Packer, fh: BinaryIO,
               load: Callable[[Any], np.ndarray]) -> None:
    """Stream the nested map to ``fh``, keys sorted at every level: one array is loaded and encoded at a time."""
    fh.write(packer.pack_map_header(len(tree)))
    for key in sorted(tree):
        fh.write(packer.pack(key))
        value = tree[key]
        if isinstance(value, dict):
            _pack_tree(value, packer, fh, load)
        else:
            _write_array(fh, np.asarray(load(value)))


def write(fh: BinaryIO, leaves: Mapping[str, Leaf], load: Callable[[Leaf], np.ndarray]) -> None:
    """Encode ``{"/"-joined path: leaf}`` into ``fh``, each leaf turned into its array by ``load`` only when written."""
    _pack_tree(_nest(leaves), msgpack.Packer(use_bin_type=True, strict_types=True), fh, load)


def encode(arrays: Mapping[str, np.ndarray]) -> bytes:
    """{"/"-joined path: array} -> msgpack bytes, as flax.serialization.msgpack_serialize writes them."""
    buf = io.BytesIO()
    write(buf, arrays, np.asarray)
    return buf.getvalue()
