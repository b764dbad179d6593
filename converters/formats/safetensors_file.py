"""A dependency-free safetensors reader (lazy, one byte range per tensor) and streaming writer.

File layout (safetensors spec): u64 little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the raw little-endian data; offsets are relative to the end of the header.

The reader accepts exactly the files the ``safetensors`` library (0.8, Rust + serde_json)
accepts, and rejects the rest with a FormatError naming the file and the tensor; the
differential test (tests/test_safetensors_file.py) checks this against the library. Its rules:

* at least 8 bytes; N <= 100_000_000; N + 8 <= file size; the header is strict UTF-8;
* the header is JSON as serde_json reads it: whitespace around it (spaces, not NULs) is
  fine, nesting is at most 127 levels, no NaN/Infinity, no lone surrogate escapes, a
  number that overflows f64 (serde_json's own rounding) is an error even where ignored;
* the top level is an object; ``__metadata__`` appears at most once and is null or an
  object of strings (a repeated key: the last wins); every other key is a tensor -- a
  repeated tensor name: the last entry wins, but every entry must be well formed;
* a tensor entry is an object with ``dtype``, ``shape``, ``data_offsets`` (each once;
  other keys ignored) or a 3-element array of them; dtype is one of the 23 names of
  ``_DTYPES`` (or ``{"NAME": null}``); shape and offsets are unsigned 64-bit integers
  (``1.0``, ``-0``, ``true`` are not), offsets exactly two;
* sorted by offsets, the tensors tile the data section: the first begins at 0, each
  begins where the previous ended, each spans exactly prod(shape) x bits / 8 bytes (no
  u64 overflow on the way, whole bytes for F4/F6), and the last ends at the file's end.

Reading hands out ``NativeTensor``s; each load maps that tensor's byte range read-only
(engine/files.py ``mapped_bytes``: no copy, no fresh memory; one mapping per tensor, so its
pages leave the RSS with the tensor -- a mapping of the whole file would keep every page
touched, which once doubled verify's peak memory). BF16 comes back as ``ml_dtypes.bfloat16``
(a view of the stored bits), F8 as the ml_dtypes float8 types. Packed sub-byte tensors
(F4, F6_*) are listed but refused on load. Writing streams one tensor at a time, so peak
memory is one tensor, not the model.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from electra_bridge.schemas import FormatError

from ..engine import files
from ..engine.format import NativeTensor

#: the library's dtype names -> (numpy dtype, bits per element)
_DTYPES: dict[str, tuple[np.dtype, int]] = {name: (np.dtype(t), bits) for name, t, bits in (
    ("BOOL", np.bool_, 8), ("U8", np.uint8, 8), ("I8", np.int8, 8), ("I16", np.int16, 16),
    ("U16", np.uint16, 16), ("I32", np.int32, 32), ("U32", np.uint32, 32), ("I64", np.int64, 64),
    ("U64", np.uint64, 64), ("F16", np.float16, 16), ("BF16", ml_dtypes.bfloat16, 16),
    ("F32", np.float32, 32), ("F64", np.float64, 64), ("C64", np.complex64, 64),
    ("F8_E5M2", ml_dtypes.float8_e5m2, 8), ("F8_E4M3", ml_dtypes.float8_e4m3fn, 8),
    ("F8_E8M0", ml_dtypes.float8_e8m0fnu, 8), ("F8_E4M3FNUZ", ml_dtypes.float8_e4m3fnuz, 8),
    ("F8_E5M2FNUZ", ml_dtypes.float8_e5m2fnuz, 8), ("F4", ml_dtypes.float4_e2m1fn, 4),
    ("F6_E2M3", ml_dtypes.float6_e2m3fn, 6), ("F6_E3M2", ml_dtypes.float6_e3m2fn, 6),
)}
#: numpy dtype -> name, for writing (packed sub-byte types cannot be written from numpy arrays)
_NAMES = {dtype: name for name, (dtype, bits) in _DTYPES.items() if bits == 8 * dtype.itemsize}
MAX_HEADER = 100_000_000
_U64 = 2**64 - 1
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)
_MAX_DEPTH = 127   # serde_json's recursion limit: 128 nested arrays/objects are refused
_TENSOR_FIELDS = ("dtype", "shape", "data_offsets")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER = re.compile(r"(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?)(\d+))?")
_POW10 = [float(f"1e{i}") for i in range(309)]


class _Bad(ValueError):
    """One rule of the header broken (the message says which)."""


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in file order, duplicates kept."""


class _Number:
    """A JSON number that is not an unsigned 64-bit integer (negative or fractional)."""


_NOT_U64 = _Number()


# ---- JSON as serde_json reads it -----------------------------------------------------------------

def _f64_from_parts(significand: int, exponent: int) -> None:
    """serde_json's (not float_roundtrip) f64 construction; raises where it reports out of range."""
    f = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            if exponent >= 0:
                f *= _POW10[exponent]
                if math.isinf(f):
                    raise _Bad("a number in the header is out of range")
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise _Bad("a number in the header is out of range")
        f /= 1e308
        exponent += 308


def _number(text: str):
    """The value serde_json gives a number literal (already valid JSON): an int for u64, else _NOT_U64."""
    sign, whole, frac, exp_sign, exp = _NUMBER.fullmatch(text).groups()
    significand, exponent, overflowed = 0, 0, False
    for i, c in enumerate(whole):
        if significand * 10 + int(c) > _U64:   # serde: the rest of the integer only scales
            exponent, overflowed = len(whole) - i, True
            break
        significand = significand * 10 + int(c)
    if not overflowed and frac is None and exp is None:
        return _NOT_U64 if sign else significand   # serde: negative -> i64 (or f64 for -0), not u64
    for c in frac or "":
        if significand * 10 + int(c) > _U64:   # serde ignores further fraction digits
            break
        significand, exponent = significand * 10 + int(c), exponent - 1
    if exp is not None:
        value = 0
        for c in exp:
            if value >= _I32_MAX // 10 and (value > _I32_MAX // 10 or int(c) > _I32_MAX % 10):
                if significand != 0 and exp_sign != "-":
                    raise _Bad("a number in the header is out of range")
                return _NOT_U64
            value = value * 10 + int(c)
        exponent = max(_I32_MIN, min(_I32_MAX, exponent - value if exp_sign == "-" else exponent + value))
    _f64_from_parts(significand, exponent)
    return _NOT_U64


def _constant(name: str):
    raise _Bad(f"{name} is not JSON")


def _check_tree(value) -> None:
    """serde_json's limits on the parsed tree: nesting depth and unpaired surrogates."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, _Pairs)):
            if depth > _MAX_DEPTH:
                raise _Bad(f"the header nests deeper than {_MAX_DEPTH} levels")
            items = node if not isinstance(node, _Pairs) else [x for pair in node for x in pair]
            stack.extend((child, depth + 1) for child in items)
        elif isinstance(node, str) and _SURROGATE.search(node):
            raise _Bad("the header holds an unpaired UTF-16 surrogate escape")


def _parse_json(text: str):
    try:
        tree = json.loads(text, object_pairs_hook=_Pairs, parse_int=_number, parse_float=_number,
                          parse_constant=_constant)
    except RecursionError:
        raise _Bad(f"the header nests deeper than {_MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise _Bad(f"the header is not valid JSON ({exc})") from None
    _check_tree(tree)
    return tree


# ---- the header's structure ----------------------------------------------------------------------

def _u64(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an unsigned integer, not {_describe(value)}")
    return value


def _describe(value) -> str:
    if isinstance(value, _Pairs):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if value is _NOT_U64:
        return "a negative or fractional number"
    return "null" if value is None else repr(value)


def _dtype_name(value) -> str:
    if isinstance(value, _Pairs) and len(value) == 1 and value[0][1] is None:
        value = value[0][0]   # serde also takes a unit enum variant as {"NAME": null}
    if not isinstance(value, str):
        raise _Bad(f"dtype must be a string, not {_describe(value)}")
    if value not in _DTYPES:
        raise _Bad(f"unknown dtype {value!r} (known: {', '.join(_DTYPES)})")
    return value


def _tensor_entry(value) -> dict:
    if isinstance(value, _Pairs):
        fields: dict = {}
        for key, item in value:
            if key in _TENSOR_FIELDS:
                if key in fields:
                    raise _Bad(f"the field {key!r} appears twice")
                fields[key] = item
        missing = [k for k in _TENSOR_FIELDS if k not in fields]
        if missing:
            raise _Bad(f"the field {missing[0]!r} is missing")
        dtype, shape, offsets = (fields[k] for k in _TENSOR_FIELDS)
    elif isinstance(value, list):
        if len(value) != 3:
            raise _Bad(f"as an array its entry must hold dtype, shape, data_offsets, not {len(value)} items")
        dtype, shape, offsets = value
    else:
        raise _Bad(f"its entry must be an object, not {_describe(value)}")
    if not isinstance(shape, list) or isinstance(shape, _Pairs):
        raise _Bad(f"shape must be an array, not {_describe(shape)}")
    if not isinstance(offsets, list) or isinstance(offsets, _Pairs) or len(offsets) != 2:
        raise _Bad(f"data_offsets must be an array of two integers, not {_describe(offsets)}")
    return {"dtype": _dtype_name(dtype), "shape": tuple(_u64(d, "every shape entry") for d in shape),
            "data_offsets": tuple(_u64(o, "data_offsets") for o in offsets)}


def _structure(tree, where: str) -> tuple[dict[str, dict], dict[str, str] | None]:
    if not isinstance(tree, _Pairs):
        raise FormatError(f"{where}: the header is {_describe(tree)}, not a JSON object")
    entries: dict[str, dict] = {}
    metadata, seen_metadata = None, False
    for key, value in tree:
        if key == "__metadata__":
            if seen_metadata:
                raise FormatError(f"{where}: __metadata__ appears twice in the header")
            seen_metadata = True
            if value is not None:
                if not isinstance(value, _Pairs):
                    raise FormatError(f"{where}: __metadata__ must be an object of strings, not {_describe(value)}")
                bad = next(((k, v) for k, v in value if not isinstance(v, str)), None)
                if bad is not None:
                    raise FormatError(f"{where}: __metadata__ value {bad[0]!r} is {_describe(bad[1])}, not a string")
                metadata = dict(value)   # a repeated key: the last value wins, as in the library
            continue
        try:
            entries.pop(key, None)   # a repeated name: the last entry wins (and keeps its place last)
            entries[key] = _tensor_entry(value)
        except _Bad as exc:
            raise FormatError(f"{where}: tensor {key!r}: {exc}") from None
    return entries, metadata


def _check_layout(entries: dict[str, dict], data_size: int, where: str) -> None:
    """The tensors, sorted by offsets, tile the data section exactly (the library's validate)."""
    start = 0
    for name, e in sorted(entries.items(), key=lambda item: item[1]["data_offsets"]):
        begin, end = e["data_offsets"]
        if begin != start or end < begin:
            expected = f"begin at {start}" if begin != start else "not end before they begin"
            raise FormatError(f"{where}: tensor {name!r} has data_offsets [{begin}, {end}]; they must {expected} "
                              "(tensors must cover the data section in order, without gaps or overlaps)")
        start = end
        count = 1
        for dim in e["shape"]:
            count *= dim
            if count > _U64:
                raise FormatError(f"{where}: tensor {name!r}: shape {list(e['shape'])} overflows 64 bits")
        bits = count * _DTYPES[e["dtype"]][1]
        if bits > _U64:
            raise FormatError(f"{where}: tensor {name!r}: shape {list(e['shape'])} of {e['dtype']} overflows 64 bits")
        if bits % 8:
            raise FormatError(f"{where}: tensor {name!r}: {count} {e['dtype']} elements do not fill whole bytes")
        if end - begin != bits // 8:
            raise FormatError(f"{where}: tensor {name!r}: {e['dtype']} {list(e['shape'])} needs {bits // 8} bytes, "
                              f"its data_offsets [{begin}, {end}] span {end - begin}")
    if start != data_size:
        raise FormatError(f"{where}: the tensors cover {start} bytes of data but the file holds {data_size} "
                          "after the header (truncated, or bytes appended)")


def read_header(path: str | Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries ``{name: {dtype, shape, data_offsets}}``, metadata, data start offset) of a file
    the safetensors library would open; FormatError otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            raw = fh.read(8)
            if len(raw) != 8:
                raise FormatError(f"{path} is not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER:
                raise FormatError(f"{path} is not a safetensors file (header length {n} exceeds {MAX_HEADER})")
            if 8 + n > size:
                raise FormatError(f"{path} is not a safetensors file (header length {n} runs past the file's "
                                  f"{size} bytes)")
            blob = fh.read(n)
    except OSError as exc:
        raise FormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        tree = _parse_json(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: the safetensors header is not UTF-8 ({exc})") from None
    except _Bad as exc:
        raise FormatError(f"{path}: {exc}") from None
    entries, metadata = _structure(tree, str(path))
    _check_layout(entries, size - 8 - n, str(path))
    return entries, metadata or {}, 8 + n


class SafetensorsFile:
    """Lazy view of one .safetensors file: ``tensors()`` gives name -> NativeTensor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries, self.metadata, self._start = read_header(self.path)

    def raw(self, name: str) -> bytes:
        """The stored bytes of tensor ``name``."""
        begin, end = self.entries[name]["data_offsets"]
        with open(self.path, "rb") as fh:
            fh.seek(self._start + begin)
            data = fh.read(end - begin)
        if len(data) != end - begin:
            raise FormatError(f"{self.path} is truncated: tensor {name!r} runs past its end")
        return data

    def load(self, name: str) -> np.ndarray:
        e = self.entries[name]
        dtype, bits = _DTYPES[e["dtype"]]
        if bits != 8 * dtype.itemsize:
            raise FormatError(f"{self.path}: tensor {name!r} is {e['dtype']}, packed below one byte per element; "
                              "numpy cannot hold it")
        begin, end = e["data_offsets"]
        raw = files.mapped_bytes(self.path, self._start + begin, end - begin)
        if raw is None:
            raise FormatError(f"{self.path} is truncated: tensor {name!r} runs past its end")
        try:
            arr = raw.view(dtype.newbyteorder("<")).reshape(e["shape"])
        except ValueError as exc:   # an empty tensor whose shape numpy cannot index
            raise FormatError(f"{self.path}: tensor {name!r} of shape {list(e['shape'])}: {exc}") from None
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))

    def tensors(self) -> dict[str, NativeTensor]:
        return {name: NativeTensor(name, e["shape"], _DTYPES[e["dtype"]][0], lambda n=name: self.load(n))
                for name, e in self.entries.items()}


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str) or _SURROGATE.search(text):
        raise FormatError(f"cannot write {what} {text!r} to safetensors: it must be a string of Unicode characters")
    return text


def write(path: str | Path, tensors: Iterable[NativeTensor], metadata: Mapping[str, str] | None = None) -> None:
    """Stream ``tensors`` into ``path``, in name order.

    The header needs every shape and dtype up front; the data is then written one
    tensor at a time, each loaded only while it is being written (and checked against
    the shape and dtype the header announced).
    """
    items = sorted(tensors, key=lambda t: _check_text(t.name, "tensor name"))
    header: dict[str, object] = {}
    if metadata:   # first, as the library writes it: the header bytes equal safetensors.save_file's
        header["__metadata__"] = {_check_text(k, "metadata key"): _check_text(v, "metadata value")
                                  for k, v in metadata.items()}
    offset = 0
    for t in items:
        dtype = np.dtype(t.dtype).newbyteorder("=")
        if t.name == "__metadata__" or t.name in header:
            raise FormatError(f"cannot write tensor {t.name!r} to safetensors: the name is "
                              + ("reserved" if t.name == "__metadata__" else "given twice"))
        if dtype not in _NAMES:
            raise FormatError(f"cannot write tensor {t.name!r} of dtype {t.dtype} to safetensors")
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in t.shape):
            raise FormatError(f"cannot write tensor {t.name!r}: shape {t.shape} is not a list of sizes")
        nbytes = math.prod(int(d) for d in t.shape) * dtype.itemsize
        header[t.name] = {"dtype": _NAMES[dtype], "shape": [int(d) for d in t.shape],
                          "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for t in items:
            arr = np.asarray(t.load())
            if arr.shape != tuple(t.shape) or arr.dtype.newbyteorder("=") != np.dtype(t.dtype).newbyteorder("="):
                raise FormatError(f"cannot write tensor {t.name!r}: it loaded as {arr.dtype} {arr.shape}, "
                                  f"not the announced {t.dtype} {tuple(t.shape)}")
            # as bytes: a uint8 view (ml_dtypes types such as bfloat16 have no buffer format of their own)
            fh.write(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(-1).view(np.uint8))
