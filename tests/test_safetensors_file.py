"""Our safetensors reader accepts exactly the files the ``safetensors`` library accepts and reads the
same bytes; our writer's files read back identically through the library.

A table of hand-made cases (expected outcomes measured against safetensors 0.8) runs without the
library; with it installed, every case is also checked against it, and a hypothesis property
generates valid files, mutates them (header JSON edits, offset shifts, byte flips, truncation,
appended bytes, dtype/shape/metadata edits, duplicate keys, number literals, padding) and compares.
"""

from __future__ import annotations

import importlib.metadata
import copy
import json
import math
import struct
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from electra_bridge.converters.engine.format import NativeTensor  # noqa: E402
from electra_bridge.converters.formats import safetensors_file  # noqa: E402
from electra_bridge.converters.formats.safetensors_file import SafetensorsFile  # noqa: E402
from electra_bridge.schemas import FormatError  # noqa: E402



def _library_version() -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in importlib.metadata.version("safetensors").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


#: the rules below were measured against safetensors 0.8 (older releases know fewer dtypes)
HAVE_LIBRARY = (_library_version() or (0,)) >= (0, 8)
needs_library = pytest.mark.skipif(not HAVE_LIBRARY, reason="needs the safetensors library >= 0.8 "
                                   "(pip install 'electra-bridge[test]')")

#: the library's dtypes and their bits per element
BITS = {"BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "I32": 32, "U32": 32, "I64": 64, "U64": 64,
        "F16": 16, "BF16": 16, "F32": 32, "F64": 64, "C64": 64, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
        "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
#: dtypes the library's numpy framework hands out as arrays
NUMPY_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
                "I32": np.int32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "F16": np.float16,
                "F32": np.float32, "F64": np.float64, "C64": np.complex64}


# ---- a JSON writer that can say what json.dumps cannot (duplicate keys, raw literals) ---------------

class Pairs(list):
    """A JSON object as (key, value) pairs; keys may repeat."""


@dataclass(frozen=True)
class Raw:
    """JSON text written as is (number literals, bad escapes, NaN)."""

    text: str


def dump(node, ascii_only: bool = True) -> str:
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Pairs):
        return "{" + ",".join(f"{dump(k, ascii_only)}:{dump(v, ascii_only)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(dump(v, ascii_only) for v in node) + "]"
    return json.dumps(node, ensure_ascii=ascii_only)


def blob_of(header: str | bytes, data: bytes = b"", n: int | None = None) -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


# ---- the two readers ---------------------------------------------------------------------------------

def library_view(path: Path, blob: bytes):
    """None if the library refuses the file, else (metadata, {name: (dtype, shape, bytes)})."""
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            names, metadata = set(f.keys()), f.metadata()
    except Exception:   # SafetensorError; a Rust panic would surface as a BaseException and fail the test
        return None
    tensors = {name: (info["dtype"], list(info["shape"]), bytes(info["data"]))
               for name, info in safetensors.deserialize(blob)}
    assert set(tensors) == names
    return metadata or {}, tensors


def our_view(path: Path):
    """None if we refuse the file (always a FormatError naming it), else (metadata, {name: (dtype, shape, bytes)})."""
    try:
        f = SafetensorsFile(path)
    except FormatError as exc:
        assert str(path) in str(exc), exc
        return None
    return f.metadata, {name: (e["dtype"], list(e["shape"]), f.raw(name)) for name, e in f.entries.items()}


def check_loads(path: Path, ours) -> None:
    """``load`` returns the stored bytes as the dtype the header names (numpy's own where it has one)."""
    f = SafetensorsFile(path)
    natives = f.tensors()
    for name, (dtype, shape, data) in ours[1].items():
        if BITS[dtype] < 8:
            continue   # packed sub-byte: listed, refused on load
        try:
            arr = natives[name].load()
        except FormatError:   # only for shapes numpy cannot build (an empty tensor with huge dims)
            with pytest.raises(ValueError):
                np.zeros(0, natives[name].dtype).reshape(shape)
            continue
        assert arr.dtype == natives[name].dtype and arr.shape == tuple(shape) and arr.tobytes() == data, name
        if dtype in NUMPY_DTYPES:
            assert arr.dtype == np.dtype(NUMPY_DTYPES[dtype])


def compare(path: Path, blob: bytes) -> str:
    path.write_bytes(blob)
    theirs, ours = library_view(path, blob), our_view(path)
    assert (theirs is None) == (ours is None), f"library {'refuses' if theirs is None else 'accepts'}, we do not"
    if theirs is None:
        return "both refuse"
    assert theirs == ours
    check_loads(path, ours)
    return "both accept"


# ---- hand-made cases: expected outcomes measured against safetensors 0.8 -------------------------------

T = Pairs([("dtype", "F32"), ("shape", [1]), ("data_offsets", [0, 4])])
U8 = '"shape":[1],"data_offsets":[0,1]'


def entry(extra: str) -> str:
    return '{"a":{"dtype":"U8",' + U8 + extra + "}}"


CASES = {   # name: (header, data, accepted)
    "plain": (dump(Pairs([("a", T)])), b"\0" * 4, True),
    "whitespace around the header": (" \n" + dump(Pairs([("a", T)])) + " \t\r", b"\0" * 4, True),
    "NUL padding": (dump(Pairs([("a", T)])) + "\0", b"\0" * 4, False),
    "a byte appended": (dump(Pairs([("a", T)])), b"\0" * 5, False),
    "truncated data": (dump(Pairs([("a", T)])), b"\0" * 3, False),
    "offsets not from 0": ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8, False),
    "gap": ('{"a":{"dtype":"U8",' + U8 + '},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}', b"\0" * 3, False),
    "overlap": ('{"a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],'
                '"data_offsets":[1,2]}}', b"\0" * 2, False),
    "out of order in the header": ('{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8",'
                                   + U8 + "}}", b"\0" * 2, True),
    "end before begin": ('{"a":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}}', b"\0", False),
    "size does not match shape": ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"\0" * 4, False),
    "two empty tensors at one offset": ('{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
                                        '"b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}', b"", True),
    "no tensors": ("{}", b"", True),
    "empty header": ("", b"", False),
    "top level array": ("[]", b"", False),
    "unknown dtype": (entry("").replace("U8", "F99", 1), b"\0", False),
    "lower-case dtype": (entry("").replace("U8", "u8", 1), b"\0", False),
    "dtype as unit variant map": ('{"a":{"dtype":{"U8":null},' + U8 + "}}", b"\0", True),
    "dtype map with a value": ('{"a":{"dtype":{"U8":0},' + U8 + "}}", b"\0", False),
    "F4, odd count": ('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"\0" * 2, False),
    "F4, even count": ('{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}', b"\0" * 2, True),
    "F6, 4 elements in 3 bytes": ('{"a":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[0,3]}}', b"\0" * 3, True),
    "shape 1.0": ('{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', b"\0", False),
    "shape -0": ('{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}', b"", False),
    "shape true": ('{"a":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"\0", False),
    "shape 2**64": ('{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}', b"\0", False),
    "shape overflows before its 0": ('{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],'
                                     '"data_offsets":[0,0]}}', b"", False),
    "shape 0 before huge dims": ('{"a":{"dtype":"U8","shape":[0,4294967296,4294967296],'
                                 '"data_offsets":[0,0]}}', b"", True),
    "three offsets": ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}}', b"\0", False),
    "entry as a 3-array": ('{"a":["U8",[1],[0,1]]}', b"\0", True),
    "entry as a 4-array": ('{"a":["U8",[1],[0,1],0]}', b"\0", False),
    "entry null": ('{"a":null}', b"", False),
    "field missing": ('{"a":{' + U8 + "}}", b"\0", False),
    "field twice": (entry(',"dtype":"U8"'), b"\0", False),
    "unknown fields, even twice": (entry(',"z":[1,{"q":null}],"z":-5'), b"\0", True),
    "tensor name twice, the last fits": ('{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"U8",'
                                         + U8 + "}}", b"\0", True),
    "tensor name twice, the first fits": ('{"a":{"dtype":"U8",' + U8 + '},"a":{"dtype":"F64","shape":[1],'
                                          '"data_offsets":[0,8]}}', b"\0", False),
    "tensor name twice, the first malformed": ('{"a":{"dtype":"F99",' + U8 + '},"a":{"dtype":"U8",' + U8 + "}}",
                                               b"\0", False),
    "__metadata__ twice": ('{"__metadata__":null,"__metadata__":null,"a":{"dtype":"U8",' + U8 + "}}", b"\0", False),
    "__metadata__ key twice": ('{"__metadata__":{"x":"1","x":"2"},"a":{"dtype":"U8",' + U8 + "}}", b"\0", True),
    "__metadata__ null": ('{"__metadata__":null,"a":{"dtype":"U8",' + U8 + "}}", b"\0", True),
    "__metadata__ a list": ('{"__metadata__":[],"a":{"dtype":"U8",' + U8 + "}}", b"\0", False),
    "__metadata__ value a number": ('{"__metadata__":{"x":1},"a":{"dtype":"U8",' + U8 + "}}", b"\0", False),
    "NaN": (entry(',"z":NaN'), b"\0", False),
    "1e400": (entry(',"z":1e400'), b"\0", False),
    "f64::MAX itself (serde_json rounds it up)": (entry(',"z":1.7976931348623158e308'), b"\0", False),
    "just under f64::MAX": (entry(',"z":1.7976931348623157e308'), b"\0", True),
    "1e-400": (entry(',"z":1e-400'), b"\0", True),
    "30-digit integer": (entry(',"z":' + "9" * 30), b"\0", True),
    "400-digit integer": (entry(',"z":' + "9" * 400), b"\0", False),
    "lone surrogate escape": ('{"a\\ud800":{"dtype":"U8",' + U8 + "}}", b"\0", False),
    "surrogate pair escape": ('{"a\\ud83d\\ude00":{"dtype":"U8",' + U8 + "}}", b"\0", True),
    "raw control character in a name": ('{"a\t":{"dtype":"U8",' + U8 + "}}", b"\0", False),
    "escaped NUL in a name": ('{"a\\u0000":{"dtype":"U8",' + U8 + "}}", b"\0", True),
    "invalid UTF-8": (b'{"a\xff":{"dtype":"U8",' + U8.encode() + b"}}", b"\0", False),
    "byte order mark": ("\ufeff{}", b"", False),
    "127 levels of nesting": (entry(',"z":' + "[" * 125 + "]" * 125), b"\0", True),
    "128 levels of nesting": (entry(',"z":' + "[" * 126 + "]" * 126), b"\0", False),
}
FRAMING = {   # name: (blob, accepted)
    "shorter than 8 bytes": (b"\2\0\0", False),
    "header length past the end": (blob_of("{}", n=10), False),
    "header length over 100,000,000": (blob_of("{}", n=100_000_001), False),
}


def _case_blobs():
    for name, (header, data, ok) in CASES.items():
        yield pytest.param(blob_of(header, data), ok, id=name)
    for name, (blob, ok) in FRAMING.items():
        yield pytest.param(blob, ok, id=name)


@pytest.mark.parametrize("blob, accepted", list(_case_blobs()))
def test_hand_made_cases(tmp_path, blob, accepted):
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    assert (our_view(path) is not None) == accepted
    if HAVE_LIBRARY:
        assert compare(path, blob) == ("both accept" if accepted else "both refuse")


def test_errors_name_the_file_and_the_tensor(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob_of('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"\0" * 4))
    with pytest.raises(FormatError, match=r"m\.safetensors: tensor 'w': F32 \[2\] needs 8 bytes"):
        SafetensorsFile(path)


def test_packed_sub_byte_tensors_are_listed_but_refused_on_load(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob_of('{"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}', b"\x12\x34"))
    f = SafetensorsFile(path)
    assert f.raw("q") == b"\x12\x34"
    with pytest.raises(FormatError, match="'q' is F4, packed below one byte"):
        f.tensors()["q"].load()


# ---- generated files and their mutations ---------------------------------------------------------------

@dataclass
class Doc:
    """A file under construction: header pairs, data section, framing."""

    pairs: Pairs
    data: bytes
    before: str = ""
    after: str = ""
    ascii_only: bool = True
    n_delta: int = 0
    byte_edits: list = field(default_factory=list)

    def blob(self) -> bytes:
        header = (self.before + dump(self.pairs, self.ascii_only) + self.after).encode()
        out = bytearray(blob_of(header, self.data, n=max(0, len(header) + self.n_delta) if self.n_delta else None))
        for edit in self.byte_edits:
            edit(out)
        return bytes(out)

    def tensor_indices(self) -> list[int]:
        return [i for i, (k, _) in enumerate(self.pairs) if k != "__metadata__"] if self.is_object() else []

    def is_object(self) -> bool:
        return isinstance(self.pairs, Pairs)


names = st.text(st.characters(codec="utf-8"), max_size=5).filter(lambda s: s != "__metadata__")


@st.composite
def valid_docs(draw) -> Doc:
    specs = []
    for name in draw(st.lists(names, max_size=4, unique=True)):
        dtype = draw(st.sampled_from(sorted(BITS)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        if math.prod(shape) * BITS[dtype] % 8:
            shape.append(4)
        nbytes = math.prod(shape) * BITS[dtype] // 8
        specs.append((name, dtype, shape, draw(st.binary(min_size=nbytes, max_size=nbytes))))
    offset, entries, data = 0, {}, b""
    for name, dtype, shape, raw in draw(st.permutations(specs)):   # data order independent of header order
        entries[name] = (dtype, shape, [offset, offset + len(raw)])
        offset, data = offset + len(raw), data + raw
    pairs = Pairs()
    for name, _, _, _ in draw(st.permutations(specs)):
        dtype, shape, offsets = entries[name]
        if draw(st.booleans()):
            fields = [("dtype", dtype), ("shape", shape), ("data_offsets", offsets)]
            pairs.append((name, Pairs(draw(st.permutations(fields)))))
        else:
            pairs.append((name, [dtype, shape, offsets]))
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3))
    if metadata is not None or draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), ("__metadata__", None if metadata is None
                                                        else Pairs(metadata.items())))
    return Doc(pairs, data, ascii_only=draw(st.booleans()),
               after=draw(st.sampled_from(["", " ", "  ", "\n"])))


def _fields(doc: Doc, i: int):
    """(pairs-or-list of the i-th entry, setter for a field)."""
    value = doc.pairs[i][1]

    def set_field(key: str, new) -> None:
        if isinstance(value, Pairs):
            for j, (k, _) in enumerate(value):
                if k == key:
                    value[j] = (k, new)
        elif isinstance(value, list) and len(value) == 3:
            value[_FIELD_INDEX[key]] = new
    return value, set_field


_FIELD_INDEX = {"dtype": 0, "shape": 1, "data_offsets": 2}


def _get(value, key):
    if isinstance(value, Pairs):
        return next((v for k, v in value if k == key), None)
    return value[_FIELD_INDEX[key]] if isinstance(value, list) and len(value) == 3 else None


number_literals = st.builds(
    lambda sign, whole, frac, exp: sign + whole + frac + exp,
    st.sampled_from(["", "-"]),
    st.sampled_from(["0", "1", "9"]) | st.from_regex(r"[1-9][0-9]{0,25}", fullmatch=True)
    | st.integers(300, 320).map(lambda k: "17976931348623157" + "0" * (k - 17)) | st.just("18446744073709551616"),
    st.sampled_from(["", ".0", ".5"]) | st.from_regex(r"\.[0-9]{1,22}", fullmatch=True),
    st.sampled_from(["", "e0", "E+1", "e-5"]) | st.builds(lambda s, d: "e" + s + str(d), st.sampled_from(["", "+", "-"]),
                                                          st.integers(280, 340) | st.integers(0, 2**33)),
)
odd_values = st.sampled_from([None, True, 0, -1, 1.5, "x", "F32", [], Pairs(), Pairs([("F32", None)]),
                              Raw("-0"), Raw("1.0"), Raw("1e0"), Raw("NaN"), Raw("Infinity"), Raw('"\\ud800"'),
                              Raw('"\\ud83d\\ude00"'), Raw("18446744073709551615"), Raw("18446744073709551616")]
                             ).map(copy.deepcopy)   # fresh objects: mutations edit them in place
json_values = st.recursive(odd_values | number_literals.map(Raw) | st.text(max_size=3),
                           lambda kids: st.lists(kids, max_size=3)
                           | st.lists(st.tuples(st.text(max_size=2), kids), max_size=3).map(Pairs), max_leaves=6)


@st.composite
def mutate(draw, doc: Doc) -> str:
    kind = draw(st.sampled_from(sorted(MUTATIONS) if doc.is_object() else sorted(FRAMING_MUTATIONS)))
    MUTATIONS[kind](draw, doc)
    return kind


def _pick_tensor(draw, doc: Doc) -> int | None:
    indices = doc.tensor_indices()
    return draw(st.sampled_from(indices)) if indices else None


def m_dtype(draw, doc):
    if (i := _pick_tensor(draw, doc)) is not None:
        _fields(doc, i)[1]("dtype", draw(st.sampled_from(sorted(BITS)) | odd_values
                                         | st.sampled_from(["f32", "F99", "", "BF16 ", "float32"])))


def m_shape(draw, doc):
    if (i := _pick_tensor(draw, doc)) is None:
        return
    value, set_field = _fields(doc, i)
    shape = _get(value, "shape")
    shape = list(shape) if isinstance(shape, list) and not isinstance(shape, Pairs) else []
    how = draw(st.sampled_from(["append", "drop", "set", "odd", "huge"]))
    if how == "append":
        shape.append(draw(st.integers(0, 4)))
    elif how == "drop" and shape:
        shape.pop(draw(st.integers(0, len(shape) - 1)))
    elif how == "set" and shape:
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 8))
    elif how == "odd":
        shape.insert(draw(st.integers(0, len(shape))), draw(odd_values))
    else:
        shape = draw(st.permutations(shape + [0, 2**32, 2**32 + draw(st.integers(0, 1))]))
    set_field("shape", shape)


def m_offsets(draw, doc):
    if (i := _pick_tensor(draw, doc)) is None:
        return
    value, set_field = _fields(doc, i)
    offsets = _get(value, "data_offsets")
    offsets = list(offsets) if isinstance(offsets, list) and len(offsets) == 2 else [0, 0]
    offsets = [o if isinstance(o, int) and not isinstance(o, bool) else 0 for o in offsets]
    how = draw(st.sampled_from(["shift begin", "shift end", "shift both", "swap", "length", "odd"]))
    delta = draw(st.integers(-8, 8))
    if how == "shift begin":
        offsets[0] = max(0, offsets[0] + delta)
    elif how == "shift end":
        offsets[1] = max(0, offsets[1] + delta)
    elif how == "shift both":
        offsets = [max(0, o + delta) for o in offsets]
    elif how == "swap":
        offsets.reverse()
    elif how == "length":
        offsets = offsets[: draw(st.integers(0, 1))] if draw(st.booleans()) else offsets + [offsets[1]]
    else:
        offsets[draw(st.integers(0, 1))] = draw(odd_values)
    set_field("data_offsets", offsets)


def m_swap_offsets(draw, doc):
    indices = doc.tensor_indices()
    if len(indices) >= 2:
        a, b = draw(st.permutations(indices))[:2]
        (va, sa), (vb, sb) = _fields(doc, a), _fields(doc, b)
        oa, ob = _get(va, "data_offsets"), _get(vb, "data_offsets")
        sa("data_offsets", ob)
        sb("data_offsets", oa)


def m_metadata(draw, doc):
    new = draw(odd_values | st.lists(st.tuples(st.text(max_size=2), st.text(max_size=2) | odd_values),
                                     max_size=3).map(Pairs))
    where = [i for i, (k, _) in enumerate(doc.pairs) if k == "__metadata__"]
    if where and draw(st.booleans()):
        doc.pairs[where[0]] = ("__metadata__", new)
    else:
        doc.pairs.insert(draw(st.integers(0, len(doc.pairs))), ("__metadata__", new))


def m_duplicate_tensor(draw, doc):
    if (i := _pick_tensor(draw, doc)) is not None:
        name, value = doc.pairs[i]
        copy = Pairs(value) if isinstance(value, Pairs) else list(value) if isinstance(value, list) else value
        doc.pairs.insert(draw(st.integers(0, len(doc.pairs))), (name, copy))
        if draw(st.booleans()):
            m_offsets(draw, doc)


def m_field_edit(draw, doc):
    if (i := _pick_tensor(draw, doc)) is None:
        return
    value = doc.pairs[i][1]
    how = draw(st.sampled_from(["duplicate", "remove", "unknown", "to array", "to object", "replace"]))
    if isinstance(value, Pairs) and value and how in ("duplicate", "remove"):
        j = draw(st.integers(0, len(value) - 1))
        if how == "duplicate":
            value.insert(draw(st.integers(0, len(value))), value[j])
        else:
            value.pop(j)
    elif isinstance(value, Pairs) and how == "unknown":
        value.insert(draw(st.integers(0, len(value))), (draw(st.sampled_from(["z", "offsets", "__metadata__"])),
                                                        draw(json_values)))
    elif isinstance(value, Pairs) and how == "to array":
        doc.pairs[i] = (doc.pairs[i][0], [_get(value, k) for k in _FIELD_INDEX])
    elif isinstance(value, list) and not isinstance(value, Pairs) and how == "to object":
        doc.pairs[i] = (doc.pairs[i][0], Pairs((k, value[j]) for k, j in _FIELD_INDEX.items() if j < len(value)))
    elif how == "replace":
        doc.pairs[i] = (doc.pairs[i][0], draw(json_values))


def m_name(draw, doc):
    if (i := _pick_tensor(draw, doc)) is not None:
        doc.pairs[i] = (draw(st.sampled_from([Raw('"a\\ud800"'), Raw('"\\udc00"'), Raw('"\\ud83d\\ude00"'),
                                              Raw('"\\u0000"'), Raw('"\t"'), "__metadata__", ""])), doc.pairs[i][1])


def m_deep(draw, doc):
    if (i := _pick_tensor(draw, doc)) is not None and isinstance(doc.pairs[i][1], Pairs):
        depth = draw(st.integers(120, 130))
        doc.pairs[i][1].append(("deep", Raw("[" * depth + "]" * depth)))


def m_top_level(draw, doc):
    doc.pairs = draw(st.sampled_from([Raw("[]"), Raw('"x"'), Raw("5"), Raw("null"), Raw(""), Raw("{")]))


def m_padding(draw, doc):
    pad = st.text(st.sampled_from([" ", "\t", "\n", "\r", "\0", "\x0b", "\ufeff"]), max_size=3)
    doc.before, doc.after = draw(pad), draw(pad)


def m_header_length(draw, doc):
    doc.n_delta = draw(st.integers(-6, 6).filter(bool) | st.sampled_from([2**40, 100_000_001, 2**63]))


def m_byte_flip(draw, doc):
    size = len(doc.blob())
    pos, xor = draw(st.integers(0, max(0, size - 1))), draw(st.integers(1, 255))
    doc.byte_edits.append(lambda b: b.__setitem__(pos, b[pos] ^ xor) if pos < len(b) else None)


def m_truncate(draw, doc):
    keep = draw(st.integers(0, len(doc.blob())))
    doc.byte_edits.append(lambda b: b.__delitem__(slice(keep, None)))


def m_append(draw, doc):
    extra = draw(st.binary(min_size=1, max_size=9))
    doc.byte_edits.append(lambda b: b.extend(extra))


def m_data_length(draw, doc):
    delta = draw(st.integers(-3, 3).filter(bool))
    doc.data = doc.data[:delta] if delta < 0 else doc.data + b"\0" * delta


MUTATIONS = {name[2:]: fn for name, fn in globals().items() if name.startswith("m_")}
FRAMING_MUTATIONS = {k: MUTATIONS[k] for k in ("padding", "header_length", "byte_flip", "truncate", "append",
                                               "data_length")}


@needs_library
def test_valid_generated_files_read_identically(tmp_path):
    outcomes = Counter()

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(valid_docs())
    def prop(doc):
        outcomes[compare(tmp_path / "v.safetensors", doc.blob())] += 1

    prop()
    assert outcomes["both accept"] == sum(outcomes.values())


@needs_library
def test_mutated_files_are_accepted_and_refused_like_the_library():
    """1,000 generated files, each valid then mutated 1-3 times: library accepts <=> we accept; when both
    accept, the same names, metadata, dtypes, shapes and bytes."""
    outcomes, kinds = Counter(), Counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"

        @settings(max_examples=1000, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.data())
        def prop(data):
            doc = data.draw(valid_docs())
            for _ in range(data.draw(st.integers(1, 3))):
                kinds[data.draw(mutate(doc))] += 1
            outcomes[compare(path, doc.blob())] += 1

        prop()
    total = sum(outcomes.values())
    assert total >= 1000 and outcomes["both accept"] >= total // 10 and outcomes["both refuse"] >= total // 10, outcomes
    assert set(kinds) == set(MUTATIONS), set(MUTATIONS) - set(kinds)


# ---- our writer ------------------------------------------------------------------------------------------

WRITABLE = ["BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "BF16", "F32", "F64", "C64",
            "F8_E5M2", "F8_E4M3"]


@needs_library
def test_written_files_read_back_identically_through_the_library(tmp_path):
    import safetensors

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(names, st.tuples(st.sampled_from(WRITABLE), st.lists(st.integers(0, 3), max_size=3),
                                            st.randoms()), max_size=4),
           st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3))
    def prop(spec, metadata):
        arrays = {}
        for name, (dtype, shape, rnd) in spec.items():
            np_dtype = safetensors_file._DTYPES[dtype][0]
            raw = bytes(rnd.getrandbits(8) for _ in range(math.prod(shape) * np_dtype.itemsize))
            arrays[name] = np.frombuffer(raw, np_dtype).reshape(shape)
        path = tmp_path / "w.safetensors"
        safetensors_file.write(path, [NativeTensor(n, a.shape, a.dtype, lambda a=a: a) for n, a in arrays.items()],
                               metadata)
        theirs = library_view(path, path.read_bytes())
        assert theirs is not None
        assert theirs[0] == metadata
        assert theirs[1] == {n: (spec[n][0], list(a.shape), a.tobytes()) for n, a in arrays.items()}
        with safetensors.safe_open(str(path), framework="numpy") as f:
            for name, arr in arrays.items():
                if spec[name][0] in NUMPY_DTYPES:
                    assert np.array_equal(f.get_tensor(name), arr, equal_nan=arr.dtype.kind in "fc")
                    assert f.get_tensor(name).tobytes() == arr.tobytes()

    prop()


def test_writer_refuses_what_it_cannot_write_faithfully(tmp_path):
    arr = np.zeros(2, np.float32)
    ok = NativeTensor("a", (2,), arr.dtype, lambda: arr)
    for tensors, metadata, message in [
        ([ok, ok], None, "given twice"),
        ([NativeTensor("__metadata__", (2,), arr.dtype, lambda: arr)], None, "reserved"),
        ([NativeTensor("a", (3,), arr.dtype, lambda: arr)], None, "not the announced"),
        ([NativeTensor("a", (2,), np.dtype(np.float64), lambda: arr)], None, "not the announced"),
        ([NativeTensor("a", (1,), np.dtype(object), lambda: arr)], None, "dtype object"),
        ([NativeTensor("a\ud800", (2,), arr.dtype, lambda: arr)], None, "tensor name"),
        ([ok], {"k": 1}, "metadata value"),
    ]:
        with pytest.raises(FormatError, match=message):
            safetensors_file.write(tmp_path / "x.safetensors", tensors, metadata)


def test_big_endian_arrays_are_written_little_endian(tmp_path):
    arr = np.arange(3, dtype=">f4")
    safetensors_file.write(tmp_path / "x.safetensors", [NativeTensor("a", (3,), arr.dtype, lambda: arr)])
    f = SafetensorsFile(tmp_path / "x.safetensors")
    assert f.raw("a") == np.arange(3, dtype="<f4").tobytes()
    assert np.array_equal(f.load("a"), arr)
