"""Read the archive ``torch.save`` writes (``pytorch_model.bin``) without importing torch.

Layout (torch >= 1.6, the zip format; what torch 2.13 still writes): a zip archive, every record
stored uncompressed (compression 0), all under one root folder::

    <root>/data.pkl          the pickled object: here a dict (or OrderedDict) of name -> tensor
    <root>/data/<key>        one record per storage: its raw elements, nothing else
    <root>/byteorder         "little" or "big" (absent in early 1.x files: little, as they were)
    <root>/version, <root>/.format_version, <root>/.storage_alignment, <root>/.data/...

``data.pkl`` builds each tensor with ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
stride, requires_grad, backward_hooks[, metadata])`` (a ``nn.Parameter`` wraps that in
``torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks)``); the storage is a
persistent id ``('storage', storage_type, key, location, numel)`` whose ``storage_type`` global
(``torch.FloatStorage``, ``torch.BFloat16Storage``, ...) names the element type. torch 2.x keeps
writing these typed names for tensors (it wraps the untyped storage in a TypedStorage to pickle
it); ``torch.UntypedStorage`` only appears for a bare untyped storage and is read as bytes (uint8).
``storage_offset``, ``size`` and ``stride`` count elements, not bytes.

Dtype contract: a tensor's dtype is its storage's (float32/16/64, bfloat16 as ``ml_dtypes.bfloat16``,
int64/32/16/8, uint8, bool), little-endian; a big-endian archive is refused.

Safety contract: the unpickler's ``find_class`` resolves exactly the globals above, to our own
constructors; any other global (a ``__reduce__`` payload, a custom class, ``_rebuild_parameter_with_state``,
sparse or quantized tensors) raises FormatError before anything is called. Nothing from the file is
ever executed and torch is never imported (except for the pre-1.6 legacy format, which is handed to
``torch.load(weights_only=True)`` when torch is installed).

Tensors are lazy: reading the archive costs its pickle only; ``load()`` maps that tensor's span of
its record read-only (engine/files.py ``mapped_bytes``; non-contiguous views are gathered with
``as_strided`` and copied), so views sharing a storage each read only their own bytes.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra_bridge.schemas import FormatError, MissingDependencyError

from ..engine import files


def _bfloat16() -> np.dtype:
    import ml_dtypes   # numpy has no bfloat16; ml_dtypes' has torch's bit layout

    return np.dtype(ml_dtypes.bfloat16)


#: storage type name (a global of module ``torch``) -> the numpy dtype of its elements
STORAGE_DTYPES: dict[str, Callable[[], np.dtype]] = {
    "FloatStorage": lambda: np.dtype("<f4"),
    "HalfStorage": lambda: np.dtype("<f2"),
    "BFloat16Storage": _bfloat16,
    "DoubleStorage": lambda: np.dtype("<f8"),
    "LongStorage": lambda: np.dtype("<i8"),
    "IntStorage": lambda: np.dtype("<i4"),
    "ShortStorage": lambda: np.dtype("<i2"),
    "CharStorage": lambda: np.dtype("i1"),
    "ByteStorage": lambda: np.dtype("u1"),
    "BoolStorage": lambda: np.dtype("?"),
    "UntypedStorage": lambda: np.dtype("u1"),   # torch 2.x: a bare untyped storage is bytes
}

#: torch.load's own first bytes for the legacy (pre-1.6, non-zip) format: pickle protocol 2 of its
#: magic number 0x1950a86a20f9469cfc6c
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")   # zip local file header, 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class ZipTensor:
    """One tensor of the archive, not read yet: where its elements are and how they are laid out."""

    path: Path
    key: str                   # its storage record: <root>/data/<key>
    dtype: np.dtype
    data_offset: int           # the record's first byte in the file
    storage_numel: int
    storage_offset: int        # elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]    # elements

    def load(self) -> np.ndarray:
        numel = math.prod(self.shape)
        if numel == 0:
            return np.empty(self.shape, self.dtype)
        # torch strides are never negative: the span runs from storage_offset to the last element
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        raw = files.mapped_bytes(self.path, self.data_offset + self.storage_offset * self.dtype.itemsize,
                                 span * self.dtype.itemsize)
        if raw is None:
            raise FormatError(f"{self.path} is truncated: storage {self.key} ends before tensor's bytes")
        buf = raw.view(self.dtype)
        view = np.lib.stride_tricks.as_strided(
            buf, self.shape, tuple(s * self.dtype.itemsize for s in self.stride), writeable=False)
        if span == numel and view.flags.c_contiguous:
            return buf.reshape(self.shape)
        return view.copy()   # a transposed or strided view: gather only its elements, own the memory


def _refuse(path: Path, what: str) -> FormatError:
    return FormatError(
        f"refusing {path}: it contains pickled objects other than tensors ({what}). "
        "electra-bridge reads pytorch_model.bin with its own restricted unpickler (tensors only) and never "
        "runs pickled code; re-save the weights as safetensors from a trusted environment")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return ("tensor", storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data   # a Parameter is its tensor here: requires_grad means nothing to a converter


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        # Only what a state dict of tensors needs; everything else is refused before it is called.
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name]())
        raise _refuse(self.path, f"global {module}.{name}")

    def persistent_load(self, pid):
        if (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            return _Storage(pid[2], pid[1].dtype, pid[4])
        raise _refuse(self.path, f"persistent id {str(pid)[:80]}")


def is_legacy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC


def read(path: Path) -> dict:
    """``name -> ZipTensor`` in the archive's order (legacy format, torch installed: ``ArrayTensor``s).

    The object pickled must be a dict; its values are ZipTensors when they are tensors (the caller
    checks that they all are: anything else the restricted unpickler lets through is a plain
    int, str, list, ...)."""
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            if is_legacy(path):
                return _read_legacy(path)
            raise FormatError(f"{path} is not a readable PyTorch checkpoint: neither a torch.save zip archive "
                              "nor the legacy pre-1.6 format")
        with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
            return _read_zip(path, zf, raw)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, struct.error,
            pickle.UnpicklingError, TypeError, IndexError, KeyError, AttributeError, RecursionError,
            MemoryError) as exc:
        raise FormatError(f"{path} is not a readable PyTorch checkpoint: {type(exc).__name__}: {exc}") from None


def _read_zip(path: Path, zf: zipfile.ZipFile, raw) -> dict:
    infos = {i.filename: i for i in zf.infolist()}
    roots = [n[: -len("/data.pkl")] for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise FormatError(f"{path} is not a readable PyTorch checkpoint: expected one <root>/data.pkl, "
                          f"found {len(roots)}")
    root = roots[0]
    for info in infos.values():
        if info.compress_type != zipfile.ZIP_STORED:
            # torch.save never compresses; a compressed record is not its file (and could not be read in place)
            raise FormatError(f"{path} is not a readable PyTorch checkpoint: record {info.filename} is compressed "
                              f"(method {info.compress_type}); torch.save stores every record uncompressed")
    order = infos.get(f"{root}/byteorder")
    if order is not None and zf.read(order).strip() != b"little":
        raise FormatError(f"{path} was saved on a big-endian machine (byteorder {zf.read(order).strip()!r}); "
                          "electra-bridge reads little-endian torch archives only: re-save it on a little-endian one")
    payload = zf.read(infos[f"{root}/data.pkl"])
    # Walk the opcodes first (pure Python, reads nothing it is not given): a length prefix larger than
    # the record is refused here as ValueError, where the C unpickler would first try to allocate it.
    for _ in pickletools.genops(payload):
        pass
    state = _Unpickler(io.BytesIO(payload), path).load()
    if not isinstance(state, dict):
        return state
    size = path.stat().st_size
    offsets: dict[str, int] = {}
    out = {}
    for name, value in state.items():
        if not (isinstance(value, tuple) and len(value) == 5 and value[0] == "tensor"):
            out[name] = value
            continue
        _, storage, storage_offset, shape, stride = value
        if not isinstance(storage, _Storage):
            raise _refuse(path, f"entry {name!r}: a tensor without a storage")
        info = infos.get(f"{root}/data/{storage.key}")
        if info is None:
            raise FormatError(f"{path} is not a readable PyTorch checkpoint: storage record data/{storage.key} "
                              f"of {name!r} is missing")
        if storage.key not in offsets:
            offsets[storage.key] = _data_offset(path, raw, info)
        nbytes = storage.numel * storage.dtype.itemsize
        if info.file_size < nbytes or offsets[storage.key] + nbytes > size:
            raise FormatError(f"{path} is not a readable PyTorch checkpoint: storage data/{storage.key} holds "
                              f"{info.file_size} bytes, {nbytes} expected")
        ints = (storage_offset, *shape, *stride)
        if (not all(isinstance(v, int) and v >= 0 for v in ints) or len(shape) != len(stride)
                or (math.prod(shape) and storage_offset + sum((n - 1) * s for n, s in zip(shape, stride))
                    >= storage.numel)):
            raise FormatError(f"{path} is not a readable PyTorch checkpoint: tensor {name!r} (offset "
                              f"{storage_offset}, shape {shape}, stride {stride}) lies outside its storage "
                              f"of {storage.numel} elements")
        out[name] = ZipTensor(path, storage.key, storage.dtype, offsets[storage.key], storage.numel,
                              storage_offset, shape, stride)
    return out


def _data_offset(path: Path, raw, info: zipfile.ZipInfo) -> int:
    """The record's first data byte: its local header's offset plus that header's own length (whose
    extra field may differ from the central directory's: torch pads it to align the data)."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise FormatError(f"{path} is truncated: the local header of {info.filename} is cut off")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _LOCAL_SIGNATURE:
        raise FormatError(f"{path} is not a readable PyTorch checkpoint: bad local header for {info.filename}")
    name_len, extra_len = fields[9], fields[10]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _read_legacy(path: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            f"{path.name} is in torch's legacy (pre-1.6, non-zip) format, which only torch.load reads: "
            "pip install 'electra-bridge[torch]', or re-save it with a current torch (or as model.safetensors)"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((line for line in lines if "Unsupported global" in line or "GLOBAL" in line),
                      lines[0] if lines else "")
        raise _refuse(path, detail.strip()) from None
    except RuntimeError as exc:
        raise FormatError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None
    if not isinstance(state, dict):
        return state
    return {name: ArrayTensor(_to_numpy(t)) if isinstance(t, torch.Tensor) else t for name, t in state.items()}


@dataclass(frozen=True)
class ArrayTensor:
    """A legacy file's tensor, already in memory (torch.load read it whole): the ZipTensor interface."""

    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def load(self) -> np.ndarray:
        return self.array


def _to_numpy(t) -> np.ndarray:
    import torch

    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:   # numpy has no bfloat16: reinterpret the bits through ml_dtypes
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()
