"""TF1 tensor bundles (``prefix.index`` + ``prefix.data-XXXXX-of-YYYYY``, TensorFlow
``core/util/tensor_bundle``), read and written without TensorFlow.

* ``prefix.index`` is an SSTable (tf1_table.py) from tensor name to entry. The value of the
  empty key is a ``BundleHeaderProto`` (num_shards=1, endianness=2, version=3); every other
  value is a ``BundleEntryProto`` (dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6
  fixed32, slices=7). Both are decoded by hand here.
* A data shard holds each tensor's raw little-endian bytes at ``[offset, offset+size)``;
  the entry's ``crc32c`` is the masked crc32c of exactly those bytes.
* A folder's ``checkpoint`` file (a text proto) names the latest prefix.

Reading is lazy: ``BundleReader`` parses only the index; ``read(name)`` maps one tensor's
byte range read-only (engine/files.py ``mapped_bytes``), checks its checksum and returns it in its
stored dtype (bfloat16 as ``ml_dtypes.bfloat16``), so tensors nobody asks for (optimizer
slots) are never read. Writing streams one tensor at a time into one shard and produces what
TensorFlow's own ``BundleWriter`` produces.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from electra_bridge.schemas import FormatError, TensorLike

from ..engine.files import confined, mapped_bytes
from .tf1_table import build_table, crc32c, encode_varint, has_table_magic, mask, read_table, read_varint, unmask

BUNDLE_VERSION = 1             # kTensorBundleVersion; we read bundles whose min_consumer allows it
HEADER_KEY = b""
LITTLE_ENDIAN = 0              # BundleHeaderProto.Endianness.LITTLE

#: TensorFlow DataType enum -> numpy dtype as stored (little-endian)
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 8: np.dtype("<c8"), 9: np.dtype("<i8"), 10: np.dtype("?"), 14: np.dtype(ml_dtypes.bfloat16),
    17: np.dtype("<u2"), 18: np.dtype("<c16"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
#: the dtype an entry of any other DataType (string, resource, variant, quantized) reports; never read
UNREADABLE = np.dtype(object)
TF_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
                  8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
                  19: "float16", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64"}
_ENUM_OF = {dtype: enum for enum, dtype in TF_DTYPES.items()}


# ---- protobuf wire format ---------------------------------------------------------------------

def _signed64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def proto_fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a serialized message: ints for varint and fixed
    fields, bytes for length-delimited ones. Unknown wire types are a FormatError."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise FormatError("truncated fixed64 field")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            if pos + n > end:
                raise FormatError("truncated length-delimited field")
            value = bytes(buf[pos:pos + n])
            pos += n
        elif wire == 5:
            if pos + 4 > end:
                raise FormatError("truncated fixed32 field")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire} (field {field})")
        yield field, wire, value


def _field_varint(field: int, value: int) -> bytes:
    return encode_varint(field << 3) + encode_varint(value) if value else b""


def _field_bytes(field: int, data: bytes) -> bytes:
    return encode_varint(field << 3 | 2) + encode_varint(len(data)) + data


def _field_fixed32(field: int, value: int) -> bytes:
    return encode_varint(field << 3 | 5) + struct.pack("<I", value)


# ---- bundle protos --------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One BundleEntryProto: where a tensor's bytes are and what they must hash to."""

    name: str
    dtype_enum: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0      # masked, as stored
    num_slices: int = 0  # > 0 for a partitioned variable's full-tensor entry

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the stored elements (``UNREADABLE`` for a DataType numpy cannot hold)."""
        return TF_DTYPES.get(self.dtype_enum, UNREADABLE)

    @property
    def dtype_name(self) -> str:
        return TF_DTYPE_NAMES.get(self.dtype_enum, f"DataType {self.dtype_enum}")


def _typed(value, kind: type, what: str):
    """``value`` if the field came with the wire type its message declares (varint vs bytes)."""
    if not isinstance(value, kind):
        raise FormatError(f"protobuf field {what} has the wrong wire type: the record is corrupt")
    return value


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, _, value in proto_fields(buf):
        if field == 2:                       # repeated Dim {int64 size = 1; string name = 2}
            size = 0
            for f, _, v in proto_fields(_typed(value, bytes, "TensorShapeProto.dim")):
                if f == 1:
                    size = _signed64(_typed(v, int, "Dim.size"))
            dims.append(size)
        elif field == 3 and value:           # unknown_rank
            raise FormatError("a tensor in the bundle has unknown rank")
    if any(d < 0 for d in dims):
        raise FormatError(f"a tensor in the bundle has a negative dimension {dims}")
    return tuple(dims)


def parse_entry(name: str, buf: bytes) -> Entry:
    fields = {"dtype_enum": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0, "num_slices": 0}
    for field, _, value in proto_fields(buf):
        if field in (1, 3, 4, 5, 6):
            _typed(value, int, f"BundleEntryProto field {field}")
        if field == 1:
            fields["dtype_enum"] = value
        elif field == 2:
            fields["shape"] = _parse_shape(_typed(value, bytes, "BundleEntryProto.shape"))
        elif field == 3:
            fields["shard_id"] = value
        elif field == 4:
            fields["offset"] = _signed64(value)
        elif field == 5:
            fields["size"] = _signed64(value)
        elif field == 6:
            fields["crc32c"] = value
        elif field == 7:
            fields["num_slices"] += 1
    return Entry(name, **fields)


def encode_entry(e: Entry) -> bytes:
    shape = b"".join(_field_bytes(2, _field_varint(1, d)) for d in e.shape)
    return (_field_varint(1, e.dtype_enum) + _field_bytes(2, shape) + _field_varint(3, e.shard_id)
            + _field_varint(4, e.offset) + _field_varint(5, e.size) + _field_fixed32(6, e.crc32c))


def parse_header(buf: bytes) -> dict:
    header = {"num_shards": 0, "endianness": LITTLE_ENDIAN, "producer": 0, "min_consumer": 0, "bad_consumers": []}
    for field, _, value in proto_fields(buf):
        if field in (1, 2):
            _typed(value, int, f"BundleHeaderProto field {field}")
        if field == 1:
            header["num_shards"] = value
        elif field == 2:
            header["endianness"] = value
        elif field == 3:                     # VersionDef {producer = 1; min_consumer = 2; repeated bad_consumers = 3}
            for f, w, v in proto_fields(_typed(value, bytes, "BundleHeaderProto.version")):
                if f == 1:
                    header["producer"] = v
                elif f == 2:
                    header["min_consumer"] = v
                elif f == 3 and w == 0:
                    header["bad_consumers"].append(v)
                elif f == 3:                 # packed repeated
                    v = _typed(v, bytes, "VersionDef.bad_consumers")
                    pos = 0
                    while pos < len(v):
                        item, pos = read_varint(v, pos)
                        header["bad_consumers"].append(item)
    return header


def encode_header(num_shards: int = 1) -> bytes:
    return _field_varint(1, num_shards) + _field_bytes(3, _field_varint(1, BUNDLE_VERSION))


# ---- locating a bundle ----------------------------------------------------------------------

_CKPT_STATE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', re.MULTILINE)
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


#: the most data shards a bundle header may claim beyond one per tensor
MAX_SHARDS = 1024


def data_filename(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def index_path(prefix: Path) -> Path:
    return Path(f"{prefix}.index")


def resolve_prefix(path: str | Path) -> Path:
    """The bundle prefix (``.../model.ckpt-N``) of a folder, a ``checkpoint`` state file, a
    prefix, its ``.index`` or one of its data shards. A folder's ``checkpoint`` file names the
    latest; a path in it that does not exist here (absolute paths from the training machine,
    ``gs://``) is looked up by its base name beside the file: a bundle is only ever read from
    the state file's own folder."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    if path.is_file() and _DATA_SUFFIX.search(path.name):
        return path.with_name(_DATA_SUFFIX.sub("", path.name))
    if index_path(path).is_file():
        return path
    folder, state = (path, path / "checkpoint") if path.is_dir() else (path.parent, path)
    if state.is_file() and state.name == "checkpoint":
        with open(state, "rb") as fh:  # a state file is a few lines; read no more than 1 MiB of it
            match = _CKPT_STATE.search(fh.read(1 << 20).decode("utf-8", errors="replace"))
        if match:
            named = match.group(1).encode().decode("unicode_escape", errors="replace")
            base = named.replace("\\", "/").rsplit("/", 1)[-1]
            # only the bundle beside the state file, by base name: never the path as written
            # (absolute, ../, the working folder), so no byte is read from outside the folder
            candidate = folder / base
            if base not in ("", ".", "..") and index_path(candidate).is_file():
                return candidate
            raise FormatError(f"{state} names {named!r}, but no {base}.index is in {folder}")
    if path.is_dir():
        indexes = sorted(p for p in path.glob("*.index") if has_table_magic(p))
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        if indexes:
            raise FormatError(f"{path} holds several TF1 checkpoints ({', '.join(p.name for p in indexes)}) and no "
                              "'checkpoint' file naming the latest; pass the one you want (its .index file)")
    raise FormatError(f"{path}: no TF1 checkpoint found (expected model.ckpt-N.index + .data-* files, or a folder "
                      "with a 'checkpoint' file)")


# ---- reading --------------------------------------------------------------------------------

class BundleReader:
    """Lazy view of a bundle: ``entries`` from the index; tensor bytes read only by ``read``."""

    def __init__(self, path: str | Path):
        self.prefix = resolve_prefix(path)
        self.index_path = index_path(self.prefix)
        items = read_table(self.index_path)
        source = str(self.index_path)
        if not items or items[0][0] != HEADER_KEY:
            raise FormatError(f"{source}: the bundle header entry (empty key) is missing")
        self.header = parse_header(items[0][1])
        if self.header["endianness"] != LITTLE_ENDIAN:
            raise FormatError(f"{source}: big-endian bundles are not supported")
        if self.header["min_consumer"] > BUNDLE_VERSION or BUNDLE_VERSION in self.header["bad_consumers"]:
            raise FormatError(f"{source}: bundle format version {self.header} is newer than this reader "
                              f"(version {BUNDLE_VERSION})")
        self.num_shards = self.header["num_shards"]
        if not 1 <= self.num_shards <= max(MAX_SHARDS, len(items)):
            raise FormatError(f"{source}: the bundle header claims {self.num_shards} data shards for "
                              f"{len(items) - 1} tensors; the index is corrupt")
        self.entries: dict[str, Entry] = {}
        for key, value in items[1:]:
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{source}: a tensor name is not UTF-8: {key!r}") from None
            entry = parse_entry(name, value)
            if entry.num_slices == 0 and not 0 <= entry.shard_id < self.num_shards:
                raise FormatError(f"{source}: tensor {name} is in shard {entry.shard_id} of {self.num_shards}")
            self.entries[name] = entry
        missing = [self.shard_path(i).name for i in range(self.num_shards) if not self.shard_path(i).is_file()]
        if missing:
            raise FormatError(f"{self.prefix}: data shard(s) missing: {', '.join(missing)}")
        folder = self.index_path.parent.resolve()
        confined(self.index_path, folder, "bundle index")
        for i in range(self.num_shards):   # every byte read comes from the bundle's own folder
            confined(self.shard_path(i), folder, "data shard")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: e.shape for n, e in self.entries.items()}

    def shard_path(self, shard_id: int) -> Path:
        return data_filename(self.prefix, shard_id, self.num_shards)

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` in its stored dtype: its byte range read from its shard, checksum verified."""
        e = self.entries[name]
        if e.num_slices:
            raise FormatError(f"{self.prefix}: {name} is a partitioned variable ({e.num_slices} slices); "
                              "partitioned variables are not supported")
        if e.dtype == UNREADABLE:
            raise FormatError(f"{self.prefix}: {name} has dtype {e.dtype_name}, which electra-bridge does not read")
        count = int(np.prod(e.shape, dtype=object))
        if e.size != count * e.dtype.itemsize:
            raise FormatError(f"{self.prefix}: {name} has {e.size} bytes for shape {list(e.shape)} of {e.dtype_name}")
        shard = self.shard_path(e.shard_id)
        buf = mapped_bytes(shard, e.offset, e.size)   # None: the shard ends before them (checked before mapping)
        if buf is None:
            raise FormatError(f"{shard} is truncated: {name} needs bytes {e.offset}..{e.offset + e.size}")
        actual = crc32c(buf)
        if actual != unmask(e.crc32c):
            raise FormatError(f"{shard}: tensor {name} fails its checksum (crc32c {actual:#010x}, index says "
                              f"{unmask(e.crc32c):#010x}): the checkpoint is corrupt")
        arr = buf.view(e.dtype).reshape(e.shape)
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


# ---- writing --------------------------------------------------------------------------------

def tf_dtype_enum(dtype) -> int:
    key = np.dtype(dtype).newbyteorder("<")
    if key not in _ENUM_OF:
        raise FormatError(f"cannot write dtype {np.dtype(dtype)} to a TF1 bundle")
    return _ENUM_OF[key]


def write_bundle(prefix: str | Path, tensors: Mapping[str, TensorLike]) -> list[Path]:
    """Write ``prefix.index`` + ``prefix.data-00000-of-00001`` holding ``tensors`` (arrays or
    LazyTensors), streaming one tensor at a time. Returns the two paths."""
    prefix = Path(prefix)
    names = sorted(tensors, key=lambda n: n.encode("utf-8"))
    if "" in tensors:
        raise FormatError("a TF1 bundle cannot hold a tensor with an empty name (it is the header key)")
    data_path = data_filename(prefix, 0, 1)
    entries: list[tuple[bytes, bytes]] = [(HEADER_KEY, encode_header(1))]
    offset = 0
    with open(data_path, "wb") as fh:
        for name in names:
            t = tensors[name]
            dtype_enum = tf_dtype_enum(t.dtype)
            arr = np.asarray(np.asarray(t), dtype=TF_DTYPES[dtype_enum])
            arr = arr if arr.flags.c_contiguous else arr.copy()  # (ascontiguousarray would turn a scalar 1-d)
            raw = arr.reshape(-1).view(np.uint8)
            fh.write(raw.data)
            entry = Entry(name, dtype_enum, tuple(int(d) for d in arr.shape), 0, offset, raw.size,
                          mask(crc32c(raw) if raw.size else 0))
            entries.append((name.encode("utf-8"), encode_entry(entry)))
            offset += raw.size
            del arr, raw
    index = index_path(prefix)
    index.write_bytes(build_table(entries))
    return [index, data_path]


def write_checkpoint_state(folder: str | Path, prefix_name: str) -> Path:
    """The ``checkpoint`` file naming ``prefix_name`` (relative) as the latest checkpoint."""
    path = Path(folder) / "checkpoint"
    path.write_text(f'model_checkpoint_path: "{prefix_name}"\nall_model_checkpoint_paths: "{prefix_name}"\n')
    return path
