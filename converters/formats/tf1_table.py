"""The LevelDB-style SSTable a TF1 bundle's ``prefix.index`` is (TensorFlow ``core/lib/io/table*``),
read and built without TensorFlow, with the varints, masked crc32c and snappy it needs.

* Data blocks hold sorted entries ``varint32 shared | varint32 non_shared | varint32
  value_len | key delta | value`` (keys prefix-compressed against the previous key, reset at
  every restart point), then the restart offsets (uint32 each) and their count (uint32).
* Each block is followed by a 5-byte trailer: compression type (0 none, 1 snappy) and the
  masked crc32c of the block and that type byte.
* An index block maps a separator key per data block to its BlockHandle (varint64 offset,
  varint64 size). The 48-byte footer holds the metaindex and index handles, zero-padded to
  40 bytes, then the magic 0xdb4775248b80fb57 (little-endian).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from electra_bridge.schemas import FormatError, MissingDependencyError

from ..engine.files import read_small

#: a bundle .index larger than this is not one (BERT-large's is ~40 KB)
MAX_INDEX_BYTES = 256 << 20

log = logging.getLogger(__name__)

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48               # two BlockHandles padded to 40 bytes + 8 bytes of magic
BLOCK_TRAILER_SIZE = 5         # compression type byte + masked crc32c
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
BLOCK_SIZE = 256 * 1024        # TensorFlow's table::Options().block_size
RESTART_INTERVAL = 16          # ... and block_restart_interval
_MASK_DELTA = 0xA282EAD8


# ---- crc32c ---------------------------------------------------------------------------------

@cache
def _crc_module():
    try:
        import google_crc32c
    except ImportError as exc:  # a core dependency; only a broken install gets here
        raise MissingDependencyError("reading TF1 bundles needs google-crc32c: pip install google-crc32c") from exc
    if google_crc32c.implementation != "c":
        log.warning("google-crc32c has no compiled extension here; checksums of large tensors will be slow")
    return google_crc32c


def crc32c(data, crc: int = 0) -> int:
    """crc32c of a bytes-like object (bytes or a contiguous numpy array), continuing ``crc``."""
    return _crc_module().extend(crc, data)


def mask(crc: int) -> int:
    """LevelDB/TensorFlow checksum masking: rotate right by 15 bits, add a constant."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---- varints ----------------------------------------------------------------------------------

def read_varint(buf, pos: int, limit: int | None = None) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at ``buf[pos]``."""
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


# ---- snappy -----------------------------------------------------------------------------------

def snappy_decompress(data: bytes) -> bytes:
    """Raw snappy (no framing). Only small index blocks are ever compressed, so plain Python is fine."""
    length, pos = read_varint(data, 0)
    if length > 64 * len(data):   # a copy element expands at most 64 bytes from 2 (a literal 1:1)
        raise FormatError(f"snappy block: header claims {length} bytes from {len(data)} compressed")
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:                                      # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                if pos + extra > len(data):
                    raise FormatError("snappy block: a literal length runs past the end")
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > len(data):
                raise FormatError("snappy block: literal runs past the end")
            out += data[pos:pos + n]
            pos += n
            continue
        if pos + (1 if kind == 1 else 2 if kind == 2 else 4) > len(data):
            raise FormatError("snappy block: a copy element runs past the end")
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


# ---- reading a table --------------------------------------------------------------------------

def has_table_magic(path: Path) -> bool:
    """True for a file ending with the SSTable magic (cheap: reads 8 bytes)."""
    try:
        if not Path(path).is_file():   # never open a FIFO (it would block) or a device
            return False
        with open(path, "rb") as fh:
            fh.seek(-8, os.SEEK_END)
            return struct.unpack("<Q", fh.read(8))[0] == TABLE_MAGIC
    except (OSError, struct.error):
        return False


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
        try:
            return snappy_decompress(block)
        except FormatError as exc:
            raise FormatError(f"{source}: {exc}") from None
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
        shared, pos = read_varint(block, pos, limit)
        unshared, pos = read_varint(block, pos, limit)
        value_len, pos = read_varint(block, pos, limit)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise FormatError(f"{source}: a table block entry is malformed")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable file, in key order."""
    data = read_small(Path(path), MAX_INDEX_BYTES)
    source = str(path)
    if len(data) < FOOTER_SIZE:
        raise FormatError(f"{source} is not a TF1 bundle index (shorter than the {FOOTER_SIZE}-byte table footer)")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise FormatError(f"{source} is not a TF1 bundle index (table magic {magic:#x}, expected {TABLE_MAGIC:#x})")
    _, _, pos = _handle(footer)                       # metaindex: TensorFlow writes it empty; nothing to read
    index_offset, index_size, _ = _handle(footer, pos)
    handles = [_handle(h)[:2] for _, h in
               _block_entries(_read_block(data, index_offset, index_size, source=source), source=source)]
    # every data block once, none overlapping another or the index block: the entries cannot
    # outnumber the file's bytes (a handle repeated 200,000 times is refused, not parsed 200,000 times)
    spans = sorted([(o, o + n + BLOCK_TRAILER_SIZE) for o, n in handles]
                   + [(index_offset, index_offset + index_size + BLOCK_TRAILER_SIZE)])
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise FormatError(f"{source}: a block handle repeats or overlaps another block: the index is corrupt")
    out = []
    for offset, size in handles:
        out.extend(_block_entries(_read_block(data, offset, size, source=source), source=source))
    keys = [k for k, _ in out]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise FormatError(f"{source}: table keys are not strictly sorted: the index is corrupt")
    return out


# ---- building a table -------------------------------------------------------------------------

class BlockBuilder:
    """One table block being filled: prefix-compressed entries, a restart point every ``restart_interval``."""

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
    index = BlockBuilder(1)

    def flush(block: BlockBuilder) -> tuple[int, int]:
        contents = block.finish()
        offset = len(out)
        out.extend(contents)
        out.append(NO_COMPRESSION)
        out.extend(struct.pack("<I", mask(crc32c(bytes([NO_COMPRESSION]), crc32c(contents)))))
        return offset, len(contents)

    block = BlockBuilder(RESTART_INTERVAL)
    for key, value in items:
        block.add(key, value)
        if block.size() >= block_size:
            offset, size = flush(block)
            index.add(block.last, encode_varint(offset) + encode_varint(size))  # the last key is a valid separator
            block = BlockBuilder(RESTART_INTERVAL)
    if not block.empty():
        offset, size = flush(block)
        index.add(block.last, encode_varint(offset) + encode_varint(size))
    meta_offset, meta_size = flush(BlockBuilder(RESTART_INTERVAL))
    index_offset, index_size = flush(index)
    handles = encode_varint(meta_offset) + encode_varint(meta_size) + encode_varint(index_offset) + encode_varint(index_size)
    out.extend(handles + b"\0" * (FOOTER_SIZE - 8 - len(handles)) + struct.pack("<Q", TABLE_MAGIC))
    return bytes(out)
