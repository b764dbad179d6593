"""A dependency-free safetensors reader (lazy, one byte range per tensor) and streaming writer.

File layout (safetensors spec): u64 little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the raw little-endian data; offsets are relative to the end of the header.

Reading hands out ``NativeTensor``s; each load reads that tensor's byte range straight into
a fresh array (one copy, no mmap: mapped pages stay in the process's RSS as long as the
map lives, which doubled verify's peak memory). BF16 comes back as ``ml_dtypes.bfloat16``
(a view of the stored bits). Writing streams one tensor at a time, so peak memory is one
tensor, not the model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

import ml_dtypes

from electra_bridge.schemas import FormatError

from ..engine.format import NativeTensor

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": ml_dtypes.bfloat16,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> tuple[dict, dict[str, str], int]:
    """(tensor entries, metadata, data start offset)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise FormatError(f"{path} is not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise FormatError(f"{path} is not a safetensors file (header length {n} is implausible)")
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    return header, meta, 8 + n


class SafetensorsFile:
    """Lazy view of one .safetensors file: ``tensors()`` gives name -> NativeTensor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries, self.metadata, self._start = read_header(self.path)
        size = self.path.stat().st_size
        for name, e in self.entries.items():
            begin, end = e.get("data_offsets", (0, -1))
            if e.get("dtype") not in _DTYPES:
                raise FormatError(f"{self.path}: tensor {name} has unsupported dtype {e.get('dtype')}")
            itemsize = np.dtype(_DTYPES[e["dtype"]]).itemsize
            if end - begin != int(np.prod(e["shape"], dtype=np.int64)) * itemsize or self._start + end > size:
                raise FormatError(f"{self.path}: tensor {name} has data_offsets that do not fit its shape or the file")

    def load(self, name: str) -> np.ndarray:
        e = self.entries[name]
        begin, end = e["data_offsets"]
        raw = np.empty(end - begin, dtype=np.uint8)
        with open(self.path, "rb") as fh:
            fh.seek(self._start + begin)
            if (fh.readinto(memoryview(raw)) if raw.size else 0) != raw.size:
                raise FormatError(f"{self.path} is truncated: tensor {name} runs past its end")
        arr = raw.view(np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")).reshape(e["shape"])
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))

    def tensors(self) -> dict[str, NativeTensor]:
        return {name: NativeTensor(name, tuple(e["shape"]), np.dtype(_DTYPES[e["dtype"]]), lambda n=name: self.load(n))
                for name, e in self.entries.items()}


def write(path: str | Path, tensors: Iterable[NativeTensor], metadata: Mapping[str, str] | None = None) -> None:
    """Stream ``tensors`` into ``path``, in name order.

    The header needs every shape and dtype up front; the data is then written one
    tensor at a time, each loaded only while it is being written.
    """
    items = [(t.name, t) for t in sorted(tensors, key=lambda t: t.name)]
    header: dict[str, object] = {}
    offset = 0
    for name, t in items:
        dtype = np.dtype(t.dtype)
        if dtype not in _NAMES:
            raise FormatError(f"cannot write tensor {name} of dtype {dtype} to safetensors")
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _NAMES[dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, t in items:
            arr = t.load()
            fh.write(memoryview(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))).cast("B"))
