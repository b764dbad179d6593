"""TF1 tensor bundles (``prefix.index`` + ``prefix.data-XXXXX-of-YYYYY``), read and written
without TensorFlow.

Layout (TensorFlow ``core/util/tensor_bundle``, ``core/lib/io/table*``):

* ``prefix.index`` is a LevelDB-style SSTable. Data blocks hold sorted entries
  ``varint32 shared | varint32 non_shared | varint32 value_len | key delta | value`` (keys
  prefix-compressed against the previous key, reset at every restart point), then the
  restart offsets (uint32 each) and their count (uint32). Each block is followed by a
  5-byte trailer: compression type (0 none, 1 snappy) and the masked crc32c of the block
  and that type byte. An index block maps a separator key per data block to its
  BlockHandle (varint64 offset, varint64 size). The 48-byte footer holds the metaindex
  and index handles, zero-padded to 40 bytes, then the magic 0xdb4775248b80fb57 (LE).
* The value of the empty key is a ``BundleHeaderProto`` (num_shards=1, endianness=2,
  version=3); every other value is a ``BundleEntryProto`` (dtype=1, shape=2, shard_id=3,
  offset=4, size=5, crc32c=6 fixed32, slices=7). Both are decoded by hand here.
* A data shard holds each tensor's raw little-endian bytes at ``[offset, offset+size)``;
  the entry's ``crc32c`` is the masked crc32c of exactly those bytes.

Reading is lazy: ``BundleReader`` parses only the index; ``read(name)`` reads one tensor's
byte range into a fresh buffer, checks its checksum and returns a writable array, so
tensors nobody asks for (optimizer slots) are never read. Writing streams one tensor at a
time into one shard and produces what TensorFlow's own ``BundleWriter`` produces.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra_bridge.schemas import FormatError, LazyTensor, MissingDependencyError

log = logging.getLogger(__name__)

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48               # two BlockHandles padded to 40 bytes + 8 bytes of magic
BLOCK_TRAILER_SIZE = 5         # compression type byte + masked crc32c
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
BLOCK_SIZE = 256 * 1024        # TensorFlow's table::Options().block_size
RESTART_INTERVAL = 16          # ... and block_restart_interval
BUNDLE_VERSION = 1             # kTensorBundleVersion; we read bundles whose min_consumer allows it
HEADER_KEY = b""
LITTLE_ENDIAN, BIG_ENDIAN = 0, 1
_MASK_DELTA = 0xA282EAD8

#: TensorFlow DataType enum -> numpy dtype (little-endian). DT_BFLOAT16 is widened on read.
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 8: np.dtype("<c8"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"),
    18: np.dtype("<c16"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DT_BFLOAT16 = 14
TF_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
                  8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
                  19: "float16", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64"}
_ENUM_OF = {v.newbyteorder("<").str: k for k, v in TF_DTYPES.items()}


# ---- crc32c ---------------------------------------------------------------------------------

def _crc_module():
    try:
        import google_crc32c
    except ImportError as exc:  # a core dependency; only a broken install gets here
        raise MissingDependencyError("reading TF1 bundles needs google-crc32c: pip install google-crc32c") from exc
    if getattr(google_crc32c, "implementation", "c") != "c":
        log.warning("google-crc32c has no compiled extension here; checksums of large tensors will be slow")
    return google_crc32c


_CRC = None


def crc32c(data, crc: int = 0) -> int:
    """crc32c of a bytes-like object (bytes or a contiguous numpy array), continuing ``crc``."""
    global _CRC
    if _CRC is None:
        _CRC = _crc_module()
    return _CRC.extend(crc, data)


def mask(crc: int) -> int:
    """LevelDB/TensorFlow checksum masking: rotate right by 15 bits, add a constant."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---- protobuf wire format and varints --------------------------------------------------------

def _varint(buf, pos: int, limit: int | None = None) -> tuple[int, int]:
    limit = len(buf) if limit is None else limit
    result = shift = 0
    while True:
        if pos >= limit or shift > 63:
            raise FormatError("truncated or malformed varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def encode_varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # protobuf encodes negative int32/int64 as ten-byte two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _signed64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def proto_fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a serialized message: ints for varint and fixed
    fields, bytes for length-delimited ones. Unknown wire types are a FormatError."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise FormatError("truncated fixed64 field")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
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
    def dtype(self) -> np.dtype | None:
        """numpy dtype of the array ``read`` returns (bfloat16 widens to float32); None if unsupported."""
        return np.dtype(np.float32) if self.dtype_enum == DT_BFLOAT16 else TF_DTYPES.get(self.dtype_enum)

    @property
    def dtype_name(self) -> str:
        return TF_DTYPE_NAMES.get(self.dtype_enum, f"DataType {self.dtype_enum}")

    @property
    def stored_itemsize(self) -> int | None:
        if self.dtype_enum == DT_BFLOAT16:
            return 2
        dt = TF_DTYPES.get(self.dtype_enum)
        return None if dt is None else dt.itemsize


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, _, value in proto_fields(buf):
        if field == 2:                       # repeated Dim {int64 size = 1; string name = 2}
            size = 0
            for f, _, v in proto_fields(value):
                if f == 1:
                    size = _signed64(v)
            dims.append(size)
        elif field == 3 and value:           # unknown_rank
            raise FormatError("a tensor in the bundle has unknown rank")
    if any(d < 0 for d in dims):
        raise FormatError(f"a tensor in the bundle has a negative dimension {dims}")
    return tuple(dims)


def parse_entry(name: str, buf: bytes) -> Entry:
    fields = {"dtype_enum": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0, "num_slices": 0}
    for field, _, value in proto_fields(buf):
        if field == 1:
            fields["dtype_enum"] = value
        elif field == 2:
            fields["shape"] = _parse_shape(value)
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
        if field == 1:
            header["num_shards"] = value
        elif field == 2:
            header["endianness"] = value
        elif field == 3:                     # VersionDef {producer = 1; min_consumer = 2; repeated bad_consumers = 3}
            for f, w, v in proto_fields(value):
                if f == 1:
                    header["producer"] = v
                elif f == 2:
                    header["min_consumer"] = v
                elif f == 3 and w == 0:
                    header["bad_consumers"].append(v)
                elif f == 3:                 # packed repeated
                    pos = 0
                    while pos < len(v):
                        item, pos = _varint(v, pos)
                        header["bad_consumers"].append(item)
    return header


def encode_header(num_shards: int = 1) -> bytes:
    return _field_varint(1, num_shards) + _field_bytes(3, _field_varint(1, BUNDLE_VERSION))


# ---- the SSTable ----------------------------------------------------------------------------

def snappy_decompress(data: bytes) -> bytes:
    """Raw snappy (no framing). Only small index blocks are ever compressed, so plain Python is fine."""
    length, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:                                      # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > len(data):
                raise FormatError("snappy block: literal runs past the end")
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:                                      # copy, 11-bit offset
            n = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:                                              # copy, 16- or 32-bit offset
            width = 2 if kind == 2 else 4
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise FormatError("snappy block: copy offset out of range")
        for _ in range(n):                                 # byte by byte: copies may overlap themselves
            out.append(out[-offset])
    if len(out) != length:
        raise FormatError(f"snappy block: decoded {len(out)} bytes, header says {length}")
    return bytes(out)


def _read_block(data: bytes, offset: int, size: int, *, source: str) -> bytes:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise FormatError(f"{source}: a block handle points outside the file (offset {offset}, size {size})")
    kind = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    actual = crc32c(data[end:end + 1], crc32c(data[offset:end]))
    if unmask(stored) != actual:
        raise FormatError(f"{source}: index block at offset {offset} fails its checksum: the .index file is corrupt")
    block = data[offset:end]
    if kind == NO_COMPRESSION:
        return block
    if kind == SNAPPY_COMPRESSION:
        return snappy_decompress(block)
    raise FormatError(f"{source}: block at offset {offset} has unknown compression type {kind} "
                      "(TensorFlow tables use 0 = none or 1 = snappy)")


def _block_entries(block: bytes, *, source: str) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise FormatError(f"{source}: a table block is shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise FormatError(f"{source}: a table block claims {num_restarts} restart points, more than fit")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        unshared, pos = _varint(block, pos, limit)
        value_len, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise FormatError(f"{source}: a table block entry is malformed")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable file, in key order."""
    data = Path(path).read_bytes()
    source = str(path)
    if len(data) < FOOTER_SIZE:
        raise FormatError(f"{source} is not a TF1 bundle index (shorter than the {FOOTER_SIZE}-byte table footer)")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise FormatError(f"{source} is not a TF1 bundle index (table magic {magic:#x}, expected {TABLE_MAGIC:#x})")
    _, _, pos = _handle(footer)                       # metaindex: TensorFlow writes it empty; nothing to read
    index_offset, index_size, _ = _handle(footer, pos)
    out = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, source=source), source=source):
        offset, size, _ = _handle(handle)
        out.extend(_block_entries(_read_block(data, offset, size, source=source), source=source))
    keys = [k for k, _ in out]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise FormatError(f"{source}: table keys are not strictly sorted: the index is corrupt")
    return out


class _BlockBuilder:
    def __init__(self, restart_interval: int):
        self.interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.interval:
            limit = min(len(key), len(self.last))
            while shared < limit and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.counter = 0
        self.buf += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        self.buf += key[shared:] + value
        self.last = key
        self.counter += 1

    def size(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def empty(self) -> bool:
        return not self.buf

    def finish(self) -> bytes:
        return bytes(self.buf) + b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack("<I", len(self.restarts))


def build_table(items: list[tuple[bytes, bytes]], *, block_size: int = BLOCK_SIZE) -> bytes:
    """An uncompressed SSTable of ``items`` (sorted by key), as TensorFlow's TableBuilder lays it out."""
    out = bytearray()
    index = _BlockBuilder(1)

    def flush(block: _BlockBuilder) -> tuple[int, int]:
        contents = block.finish()
        offset = len(out)
        out.extend(contents)
        out.append(NO_COMPRESSION)
        out.extend(struct.pack("<I", mask(crc32c(bytes([NO_COMPRESSION]), crc32c(contents)))))
        return offset, len(contents)

    block = _BlockBuilder(RESTART_INTERVAL)
    for key, value in items:
        block.add(key, value)
        if block.size() >= block_size:
            offset, size = flush(block)
            index.add(block.last, encode_varint(offset) + encode_varint(size))  # the last key is a valid separator
            block = _BlockBuilder(RESTART_INTERVAL)
    if not block.empty():
        offset, size = flush(block)
        index.add(block.last, encode_varint(offset) + encode_varint(size))
    meta_offset, meta_size = flush(_BlockBuilder(RESTART_INTERVAL))
    index_offset, index_size = flush(index)
    handles = encode_varint(meta_offset) + encode_varint(meta_size) + encode_varint(index_offset) + encode_varint(index_size)
    out.extend(handles + b"\0" * (FOOTER_SIZE - 8 - len(handles)) + struct.pack("<Q", TABLE_MAGIC))
    return bytes(out)


# ---- locating a bundle ----------------------------------------------------------------------

_CKPT_STATE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', re.MULTILINE)
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def data_filename(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def is_bundle_index(path: Path) -> bool:
    """True for a file ending with the SSTable magic (cheap: reads 8 bytes)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-8, os.SEEK_END)
            return struct.unpack("<Q", fh.read(8))[0] == TABLE_MAGIC
    except (OSError, struct.error):
        return False


def resolve_prefix(path: str | Path) -> Path:
    """The bundle prefix (``.../model.ckpt-N``) of a folder, a ``checkpoint`` state file, a
    prefix, its ``.index`` or one of its data shards. A folder's ``checkpoint`` file names the
    latest; a path in it that does not exist here (absolute paths from the training machine,
    ``gs://``) is looked up by its base name beside the file."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    if path.is_file() and _DATA_SUFFIX.search(path.name):
        return path.with_name(_DATA_SUFFIX.sub("", path.name))
    if Path(f"{path}.index").is_file():
        return path
    folder, state = (path, path / "checkpoint") if path.is_dir() else (path.parent, path)
    if state.is_file() and state.name == "checkpoint":
        match = _CKPT_STATE.search(state.read_text(errors="replace"))
        if match:
            named = match.group(1).encode().decode("unicode_escape")
            for candidate in (Path(named), folder / named, folder / named.replace("\\", "/").rsplit("/", 1)[-1]):
                if Path(f"{candidate}.index").is_file():
                    return candidate
            raise FormatError(f"{state} names {named!r}, but no {Path(named).name}.index is in {folder}")
    if path.is_dir():
        indexes = sorted(p for p in path.glob("*.index") if is_bundle_index(p))
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
        self.index_path = Path(f"{self.prefix}.index")
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
        missing = [data_filename(self.prefix, i, self.num_shards).name for i in range(self.num_shards)
                   if not data_filename(self.prefix, i, self.num_shards).is_file()]
        if missing:
            raise FormatError(f"{self.prefix}: data shard(s) missing: {', '.join(missing)}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: e.shape for n, e in self.entries.items()}

    def shard_path(self, shard_id: int) -> Path:
        return data_filename(self.prefix, shard_id, self.num_shards)

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name``: its byte range read from its shard, checksum verified."""
        e = self.entries[name]
        if e.num_slices:
            raise FormatError(f"{self.prefix}: {name} is a partitioned variable ({e.num_slices} slices); "
                              "partitioned variables are not supported")
        itemsize = e.stored_itemsize
        if itemsize is None:
            raise FormatError(f"{self.prefix}: {name} has dtype {e.dtype_name}, which electra-bridge does not read")
        count = int(np.prod(e.shape, dtype=np.int64))
        if e.size != count * itemsize:
            raise FormatError(f"{self.prefix}: {name} has {e.size} bytes for shape {list(e.shape)} of {e.dtype_name}")
        shard = self.shard_path(e.shard_id)
        buf = np.empty(e.size, dtype=np.uint8)
        with open(shard, "rb") as fh:
            fh.seek(e.offset)
            got = fh.readinto(memoryview(buf)) if e.size else 0
        if got != e.size:
            raise FormatError(f"{shard} is truncated: {name} needs bytes {e.offset}..{e.offset + e.size}")
        actual = crc32c(buf)
        if actual != unmask(e.crc32c):
            raise FormatError(f"{shard}: tensor {name} fails its checksum (crc32c {actual:#010x}, index says "
                              f"{unmask(e.crc32c):#010x}): the checkpoint is corrupt")
        if e.dtype_enum == DT_BFLOAT16:  # bfloat16 is the top half of a float32
            return (buf.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(e.shape)
        arr = buf.view(TF_DTYPES[e.dtype_enum]).reshape(e.shape)
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))

    def lazy(self, name: str) -> LazyTensor:
        e = self.entries[name]
        dtype = e.dtype if e.dtype is not None else np.dtype(np.float32)
        return LazyTensor(e.shape, np.dtype(dtype).newbyteorder("="), lambda: self.read(name))


# ---- writing --------------------------------------------------------------------------------

def tf_dtype_enum(dtype) -> int:
    key = np.dtype(dtype).newbyteorder("<").str
    if key not in _ENUM_OF:
        raise FormatError(f"cannot write dtype {np.dtype(dtype)} to a TF1 bundle")
    return _ENUM_OF[key]


def write_bundle(prefix: str | Path, tensors: Mapping[str, object]) -> list[Path]:
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
    index_path = Path(f"{prefix}.index")
    index_path.write_bytes(build_table(entries))
    return [index_path, data_path]


def write_checkpoint_state(folder: str | Path, prefix_name: str) -> Path:
    """The ``checkpoint`` file naming ``prefix_name`` (relative) as the latest checkpoint."""
    path = Path(folder) / "checkpoint"
    path.write_text(f'model_checkpoint_path: "{prefix_name}"\nall_model_checkpoint_paths: "{prefix_name}"\n')
    return path
