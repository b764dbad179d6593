"""The hostile-input corpus: every case is built at test time from the committed fixtures.

``CASES`` maps a case id to a builder ``(work: Work) -> Case``. A builder copies a fixture
into ``work.root``, damages it the way an attacker or a careless user would, and says which
command to run, which exit code to expect (2 unless stated) and what the one ``error:`` line
must mention (the file, and the tensor where one is to blame). tests/test_bad_inputs.py runs
every case and checks the invariants (no traceback, no output, source unchanged, no sentinel,
bounded time and memory). Nothing here is committed as a binary.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import struct
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
HF, FLAX, H5, H5_SHARDED, TF1, BIN = (FIXTURES / n for n in ("hf", "hf-flax", "hf-h5", "hf-h5-sharded", "tf1",
                                                               "hf-bin"))


@dataclass
class Case:
    argv: list[str]
    #: substrings the error line must contain (file names, tensor names)
    mentions: tuple[str, ...] = ()
    code: int = 2
    #: run in a child process under RLIMIT_AS and a timeout (special files, huge claims)
    isolate: bool = False
    #: pyproject extra the case needs (skipped without it)
    extra: str | None = None
    out: Path | None = None
    cwd: Path | None = None


@dataclass
class Work:
    root: Path
    cache: Path
    sentinel: Path = field(init=False)

    def __post_init__(self):
        self.sentinel = self.root / "SENTINEL"

    def copy(self, src: Path, name: str = "src") -> Path:
        dst = self.root / name
        shutil.copytree(src, dst)
        return dst

    @property
    def out(self) -> Path:
        return self.root / "out"

    def artifact(self, fmt: str, head: str = "sequence-classification") -> Path:
        """A copy of an artifact folder electra-bridge exported (built once per session)."""
        from electra_bridge.converters import read, write

        built = self.cache / f"{fmt}-{head}"
        if not built.exists():
            write(read(HF / head), built, fmt)
        return self.copy(built)


CASES: dict[str, Callable[[Work], Case]] = {}


def case(name: str):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return register


def inspect(path: Path, *extra: str, **kw) -> Case:
    return Case(["inspect", str(path), *extra], **kw)


def convert(w: Work, src: Path, to: str = "msgpack", *extra: str, **kw) -> Case:
    return Case(["convert", str(src), str(w.out), "--to", to, *extra], out=w.out, **kw)


# ---- byte-level helpers -------------------------------------------------------------------------

def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= mask
    path.write_bytes(bytes(data))


def st_read(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path: Path, header: dict | str, data: bytes) -> None:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def st_tensor(header: dict, part: str = "embeddings.LayerNorm.weight") -> str:
    return next(k for k in header if k != "__metadata__" and part in k)


def st_set(path: Path, name_part: str, fn: Callable[[np.ndarray], np.ndarray]) -> str:
    """Replace one tensor's values (same dtype and size) in place; returns its name."""
    header, data = st_read(path)
    name = st_tensor(header, name_part)
    start, end = header[name]["data_offsets"]
    arr = fn(np.frombuffer(data[start:end], dtype=np.float32).copy())
    st_write(path, header, data[:start] + arr.astype(np.float32).tobytes() + data[end:])
    return name


def st_drop(path: Path, name: str) -> None:
    """Rewrite a safetensors file without tensor ``name`` (offsets recomputed, still a valid file)."""
    header, data = st_read(path)
    out, blob = {"__metadata__": header.get("__metadata__", {})}, b""
    for n in sorted((k for k in header if k not in ("__metadata__", name)), key=lambda k: header[k]["data_offsets"]):
        s, e = header[n]["data_offsets"]
        out[n] = {**header[n], "data_offsets": [len(blob), len(blob) + e - s]}
        blob += data[s:e]
    st_write(path, out, blob)


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path.write_text(json.dumps(cfg))


def outside(w: Work, name: str = "outside.bin", data: bytes = b"{}") -> Path:
    p = w.root / "elsewhere" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    return p


def symlink(link: Path, target: Path | str) -> None:
    if link.exists() or link.is_symlink():
        link.unlink()
    os.symlink(target, link)


def fifo(path: Path) -> None:
    if path.exists():
        path.unlink()
    os.mkfifo(path)


# ---- safetensors --------------------------------------------------------------------------------
ST = "model.safetensors"

for _frac in (0.0, 0.003, 0.5, 0.999):
    @case(f"safetensors-truncated-{_frac}")
    def _(w, frac=_frac):
        src = w.copy(HF / "masked-lm")
        truncate(src / ST, frac)
        return inspect(src, mentions=(ST,))

for _off in (0, 9, 40, 100):
    @case(f"safetensors-header-bitflip-{_off}")
    def _(w, off=_off):
        src = w.copy(HF / "masked-lm")
        flip(src / ST, off, 0x80 if off else 0xFF)
        return inspect(src, mentions=(ST,))


@case("safetensors-header-length-2^60")
def _(w):
    src = w.copy(HF / "masked-lm")
    raw = (src / ST).read_bytes()
    (src / ST).write_bytes(struct.pack("<Q", 1 << 60) + raw[8:])
    return inspect(src, mentions=(ST,), isolate=True)


@case("safetensors-not-json")
def _(w):
    src = w.copy(HF / "masked-lm")
    st_write(src / ST, "{not json", b"")
    return inspect(src, mentions=(ST,))


@case("safetensors-duplicate-name")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    name = st_tensor(header)
    other = st_tensor(header, "word_embeddings")
    text = json.dumps(header)
    entry = json.dumps(header[other])   # the second copy (last wins) points at another tensor's bytes
    st_write(src / ST, text[:-1] + f', "{name}": {entry}' + "}", data)
    return inspect(src, mentions=(ST,))


@case("safetensors-overlapping-offsets")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    a, b = names[0], names[1]
    header[b]["data_offsets"] = header[a]["data_offsets"]
    header[b]["shape"] = header[a]["shape"]
    st_write(src / ST, header, data)
    return inspect(src, mentions=(ST,))


@case("safetensors-offset-past-end")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    name = st_tensor(header)
    s, e = header[name]["data_offsets"]
    header[name]["data_offsets"] = [s + len(data), e + len(data)]
    st_write(src / ST, header, data)
    return inspect(src, mentions=(ST,))


@case("safetensors-metadata-not-a-map")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    header["__metadata__"] = ["format", "pt"]
    st_write(src / ST, header, data)
    return inspect(src, mentions=(ST,))


for _dtype in ("I32", "BOOL", "U8", "F64"):
    @case(f"safetensors-dtype-{_dtype}")
    def _(w, dtype=_dtype):
        src = w.copy(HF / "masked-lm")
        header, data = st_read(src / ST)
        name = st_tensor(header)
        s, e = header[name]["data_offsets"]
        size = {"I32": 4, "BOOL": 1, "U8": 1, "F64": 8}[dtype]
        header[name]["dtype"] = dtype
        header[name]["shape"] = [(e - s) // size]
        st_write(src / ST, header, data)
        return convert(w, src, "msgpack", mentions=(ST, name.removeprefix("electra.")))


@case("safetensors-shape-contradicts-config")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    name = st_tensor(header, "embeddings.word_embeddings.weight")
    header[name]["shape"] = header[name]["shape"][::-1]
    st_write(src / ST, header, data)
    return convert(w, src, "h5", mentions=(ST, "word_embeddings"))


for _value, _label in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
    @case(f"safetensors-nonfinite-{_label}")
    def _(w, value=_value):
        src = w.copy(HF / "masked-lm")
        name = st_set(src / ST, "encoder.layer.1.output.dense.bias", lambda a: np.where(np.arange(a.size) == 3, value, a))
        return convert(w, src, "msgpack", mentions=(ST, name))


@case("safetensors-nonfinite-verify")
def _(w):
    src = w.copy(HF / "masked-lm")
    name = st_set(src / ST, "embeddings.LayerNorm.bias", lambda a: a * np.inf)
    return Case(["verify", str(src), str(HF / "masked-lm")], mentions=(ST, name))


@case("safetensors-missing-tensor")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    name = st_tensor(header, "encoder.layer.0.attention.self.query.weight")
    st_drop(src / ST, name)
    return inspect(src, mentions=(ST, "query.weight"))


@case("safetensors-unexpected-tensor")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    name = st_tensor(header)
    header["electra.encoder.layer.7.output.dense.bias"] = dict(header[name])
    st_write(src / ST, header, data)
    return convert(w, src, "msgpack", mentions=(ST, "layer.7"))


@case("safetensors-fifo-weights")
def _(w):
    src = w.copy(HF / "masked-lm")
    fifo(src / ST)
    return inspect(src / ST, mentions=(ST,), isolate=True)


@case("safetensors-fifo-weights-folder")
def _(w):
    src = w.copy(HF / "masked-lm")
    fifo(src / ST)
    return convert(w, src, "msgpack", mentions=("src",), isolate=True)


@case("safetensors-symlink-outside")
def _(w):
    src = w.copy(HF / "masked-lm")
    target = w.root / "elsewhere" / ST
    target.parent.mkdir()
    shutil.move(src / ST, target)
    symlink(src / ST, target)
    return inspect(src, mentions=(ST, "outside"))


@case("safetensors-symlink-dev-zero")
def _(w):
    src = w.copy(HF / "masked-lm")
    symlink(src / ST, "/dev/zero")
    return inspect(src / ST, mentions=(ST,), isolate=True)


@case("safetensors-weights-is-a-folder")
def _(w):
    src = w.copy(HF / "masked-lm")
    (src / ST).unlink()
    (src / ST).mkdir()
    return inspect(src / ST, mentions=(ST,))


@case("safetensors-empty-file")
def _(w):
    src = w.copy(HF / "masked-lm")
    (src / ST).write_bytes(b"")
    return inspect(src, mentions=(ST,))


@case("safetensors-sentinel-in-metadata")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    header["__metadata__"] = {"format": "pt", "code": f"__import__('os').system('touch {w.sentinel}')"}
    name = st_tensor(header)
    header[name]["dtype"] = "I32"
    st_write(src / ST, header, data)
    return inspect(src, mentions=(ST,))


# ---- config.json ----------------------------------------------------------------------------------
CFG = "config.json"

_CONFIGS = {
    "layers-1e9": {"num_hidden_layers": 1_000_000_000},
    "labels-1e9": {"num_labels": 1_000_000_000, "id2label": None, "label2id": None},
    "labels-zero": {"num_labels": 0, "id2label": None, "label2id": None},
    "labels-string": {"num_labels": "2", "id2label": None, "label2id": None},
    "id2label-bad-keys": {"id2label": {"a": "x", "b": "y"}},
    "id2label-gap": {"id2label": {"0": "x", "5": "y"}},
    "id2label-list": {"id2label": ["x", "y"]},
    "heads-not-dividing": {"num_attention_heads": 5},
    "hidden-string": {"hidden_size": "32"},
    "hidden-float": {"hidden_size": 32.5},
    "hidden-bool": {"hidden_size": True},
    "vocab-negative": {"vocab_size": -108},
    "vocab-1e12": {"vocab_size": 10 ** 12},
    "vocab-huge-int": {"vocab_size": 10 ** 400},
    "eps-nan": {"layer_norm_eps": float("nan")},
    "eps-string": {"layer_norm_eps": "tiny"},
    "act-unsupported": {"hidden_act": "__import__('os')"},
    "act-list": {"hidden_act": ["gelu"]},
    "position-relative": {"position_embedding_type": "relative_key"},
    "model-type-bert": {"model_type": "bert"},
    "architectures-string": {"architectures": "ElectraForMaskedLM"},
    "architectures-numbers": {"architectures": [1, 2]},
    "tie-string": {"tie_word_embeddings": "yes"},
    "max-positions-small": {"max_position_embeddings": 8},
    "embedding-size-wrong": {"embedding_size": 24},
    "intermediate-wrong": {"intermediate_size": 36},
    "layers-more-than-stored": {"num_hidden_layers": 3},
}
for _name, _changes in _CONFIGS.items():
    @case(f"config-{_name}")
    def _(w, changes=_changes):
        src = w.copy(HF / "masked-lm")
        edit_config(src, **changes)
        return convert(w, src, "msgpack", mentions=(CFG,) if "model_type" not in changes else ("bert",))


for _text_name, _text in (("not-json", b"{model_type: electra"), ("list", b"[1, 2, 3]"), ("null", b"null"),
                          ("deep-nesting", b"[" * 200_000 + b"]" * 200_000), ("not-utf8", b'{"a": "\xff\xfe"}'),
                          ("empty", b"")):
    @case(f"config-{_text_name}")
    def _(w, text=_text):
        src = w.copy(HF / "masked-lm")
        (src / CFG).write_bytes(text)
        return inspect(src, mentions=(CFG,))


@case("config-huge-file")
def _(w):
    src = w.copy(HF / "masked-lm")
    with open(src / CFG, "r+b") as fh:
        fh.truncate(64 << 20)   # sparse: 64 MiB claimed, nothing stored
    return inspect(src, mentions=(CFG,), isolate=True)


@case("config-symlink-dev-zero")
def _(w):
    src = w.copy(HF / "masked-lm")
    symlink(src / CFG, "/dev/zero")
    return inspect(src, mentions=(CFG,), isolate=True)


@case("config-fifo")
def _(w):
    src = w.copy(HF / "masked-lm")
    fifo(src / CFG)
    return inspect(src, mentions=(CFG,), isolate=True)


@case("config-symlink-outside")
def _(w):
    src = w.copy(HF / "masked-lm")
    target = outside(w, CFG, (src / CFG).read_bytes())
    symlink(src / CFG, target)
    return inspect(src, mentions=(CFG, "outside"))


@case("vocab-symlink-outside")
def _(w):
    src = w.copy(HF / "masked-lm")
    target = outside(w, "vocab.txt", (src / "vocab.txt").read_bytes())
    symlink(src / "vocab.txt", target)
    return convert(w, src, "msgpack", mentions=("vocab.txt", "outside"))


@case("bert-posing-as-electra")
def _(w):
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    header = {k.replace("electra.", "bert."): v for k, v in header.items()}
    st_write(src / ST, header, data)
    return convert(w, src, "h5", mentions=(ST, "bert."))


# ---- shard indexes (safetensors, h5) ------------------------------------------------------------

def sharded_safetensors(w: Work) -> Path:
    """masked-lm as two safetensors shards + model.safetensors.index.json."""
    src = w.copy(HF / "masked-lm")
    header, data = st_read(src / ST)
    names = sorted(k for k in header if k != "__metadata__")
    halves = (names[: len(names) // 2], names[len(names) // 2:])
    weight_map = {}
    for i, part in enumerate(halves, 1):
        shard = f"model-0000{i}-of-00002.safetensors"
        out, offset, blob = {"__metadata__": {"format": "pt"}}, 0, b""
        for n in part:
            s, e = header[n]["data_offsets"]
            out[n] = {**header[n], "data_offsets": [offset, offset + e - s]}
            blob += data[s:e]
            offset += e - s
            weight_map[n] = shard
        st_write(src / shard, out, blob)
    (src / ST).unlink()
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return src


def edit_index(src: Path, fn) -> str:
    path = src / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    name = fn(index["weight_map"])
    path.write_text(json.dumps(index))
    return name


IDX = "model.safetensors.index.json"

_INDEX_EDITS = {
    "dotdot": lambda m: m.update({next(iter(m)): "../elsewhere/model-00001-of-00002.safetensors"}),
    "absolute": lambda m: m.update({next(iter(m)): "/etc/passwd"}),
    "missing-shard": lambda m: m.update({next(iter(m)): "model-00009-of-00009.safetensors"}),
    "wrong-shard": lambda m: m.update({next(iter(m)): "model-00002-of-00002.safetensors"}),
    "unknown-tensor": lambda m: m.update({"electra.encoder.layer.9.output.dense.bias": next(iter(m.values()))}),
    "dropped-tensor": lambda m: m.pop(next(iter(m))),
}
for _name, _edit in _INDEX_EDITS.items():
    @case(f"shard-index-{_name}")
    def _(w, edit=_edit):
        src = sharded_safetensors(w)
        outside(w, "model-00001-of-00002.safetensors", (src / "model-00001-of-00002.safetensors").read_bytes())
        edit_index(src, edit)
        return convert(w, src, "msgpack", mentions=(IDX,) if edit is not _INDEX_EDITS["wrong-shard"] else ("safetensors",))


for _text_name, _text in (("not-json", "{weight_map"), ("list", '{"weight_map": ["a"]}'),
                          ("no-map", '{"metadata": {}}'), ("values-not-strings", '{"weight_map": {"a": 1}}')):
    @case(f"shard-index-{_text_name}")
    def _(w, text=_text):
        src = sharded_safetensors(w)
        (src / IDX).write_text(text)
        return inspect(src, mentions=(IDX,))


@case("shard-index-tensor-in-two-shards")
def _(w):
    src = sharded_safetensors(w)
    a, data = st_read(src / "model-00001-of-00002.safetensors")
    b, data_b = st_read(src / "model-00002-of-00002.safetensors")
    name = next(k for k in a if k != "__metadata__")
    s, e = a[name]["data_offsets"]
    b[name] = {**a[name], "data_offsets": [len(data_b), len(data_b) + e - s]}
    st_write(src / "model-00002-of-00002.safetensors", b, data_b + data[s:e])
    return inspect(src, mentions=(name,))


@case("shard-symlink-outside")
def _(w):
    src = sharded_safetensors(w)
    shard = src / "model-00002-of-00002.safetensors"
    target = outside(w, shard.name, shard.read_bytes())
    symlink(shard, target)
    return inspect(src, mentions=(shard.name, "inside"))


@case("shard-fifo")
def _(w):
    src = sharded_safetensors(w)
    fifo(src / "model-00002-of-00002.safetensors")
    return inspect(src, mentions=("model-00002-of-00002.safetensors",), isolate=True)


@case("h5-shard-index-dotdot")
def _(w):
    src = w.copy(H5_SHARDED / "masked-lm")
    path = src / "tf_model.h5.index.json"
    index = json.loads(path.read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../" + index["weight_map"][key]
    path.write_text(json.dumps(index))
    return inspect(src, mentions=("tf_model.h5.index.json",))


# ---- h5 -------------------------------------------------------------------------------------------
TF = "tf_model.h5"


def h5_first(f) -> str:
    import h5py

    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return next(n for n in names if "LayerNorm" in n)


def h5_replace(w: Work, build) -> Case:
    import h5py

    src = w.copy(H5 / "masked-lm")
    with h5py.File(src / TF, "a") as f:
        name = h5_first(f)
        shape, dtype = f[name].shape, f[name].dtype
        del f[name]
        build(f, name, shape, dtype)
    return inspect(src, mentions=(TF,))


@case("h5-external-link")
def _(w):
    import h5py

    target = outside(w, "other.h5", b"")
    with h5py.File(target, "w") as g:
        g["x"] = np.zeros(16, np.float32)

    def build(f, name, shape, dtype):
        f[name] = h5py.ExternalLink(str(target), "/x")
    return h5_replace(w, build)


@case("h5-soft-link")
def _(w):
    import h5py

    def build(f, name, shape, dtype):
        f["/hidden"] = np.zeros(shape, dtype)
        f[name] = h5py.SoftLink("/hidden")
    return h5_replace(w, build)


@case("h5-external-storage")
def _(w):
    def build(f, name, shape, dtype):
        raw = outside(w, "raw.bin", b"\0" * (int(np.prod(shape)) * dtype.itemsize))
        f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(raw), 0, raw.stat().st_size)])
    return h5_replace(w, build)


@case("h5-virtual-dataset")
def _(w):
    import h5py

    def build(f, name, shape, dtype):
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(w.root / "elsewhere" / "v.h5"), "x", shape=shape)
        f.create_virtual_dataset(name, layout)
    return h5_replace(w, build)


@case("h5-chunked-6gib-no-storage")
def _(w):
    def build(f, name, shape, dtype):
        f.create_dataset(name, shape=(1 << 20, 1536), dtype="f4", chunks=(1024, 1536))
    c = h5_replace(w, build)
    c.isolate = True
    return c


@case("h5-compressed-bomb-claim")
def _(w):
    def build(f, name, shape, dtype):
        ds = f.create_dataset(name, shape=(1 << 16, 1 << 12), dtype="f4", chunks=(256, 1 << 12), compression="gzip")
        ds[0:256] = 1.0
    c = h5_replace(w, build)
    c.isolate = True
    return c


@case("h5-integer-dataset")
def _(w):
    def build(f, name, shape, dtype):
        f[name] = np.zeros(shape, np.int32)
    c = h5_replace(w, build)
    c.mentions = (TF, "LayerNorm")
    return c


@case("h5-string-dataset")
def _(w):
    def build(f, name, shape, dtype):
        f[name] = np.array([b"x"] * int(np.prod(shape)))
    return h5_replace(w, build)


@case("h5-nonfinite")
def _(w):
    def build(f, name, shape, dtype):
        f[name] = np.full(shape, np.nan, dtype)
    c = h5_replace(w, build)
    c.argv = ["convert", c.argv[1], str(w.out), "--to", "safetensors"]
    c.out = w.out
    c.mentions = (TF, "LayerNorm")
    return c


@case("h5-shape-contradicts-config")
def _(w):
    def build(f, name, shape, dtype):
        f[name] = np.zeros((shape[0] + 1,), dtype)
    return h5_replace(w, build)


@case("h5-no-layer-names")
def _(w):
    import h5py

    src = w.copy(H5 / "masked-lm")
    with h5py.File(src / TF, "a") as f:
        del f.attrs["layer_names"]
    return inspect(src, mentions=(TF,))


@case("h5-layer-names-missing-group")
def _(w):
    import h5py

    src = w.copy(H5 / "masked-lm")
    with h5py.File(src / TF, "a") as f:
        f.attrs["layer_names"] = np.array([b"nope"])
    return inspect(src, mentions=(TF,))


for _frac in (0.0, 0.01, 0.5, 0.95):
    @case(f"h5-truncated-{_frac}")
    def _(w, frac=_frac):
        src = w.copy(H5 / "masked-lm")
        truncate(src / TF, frac)
        return inspect(src / TF, "--from", "h5", mentions=(TF,))

for _off in (0, 8, 64):
    @case(f"h5-bitflip-{_off}")
    def _(w, off=_off):
        src = w.copy(H5 / "masked-lm")
        flip(src / TF, off)
        return inspect(src / TF, "--from", "h5", mentions=(TF,))


@case("h5-fifo")
def _(w):
    src = w.copy(H5 / "masked-lm")
    fifo(src / TF)
    return inspect(src / TF, "--from", "h5", mentions=(TF,), isolate=True)


# ---- Keras 3 .keras (zip + h5) ---------------------------------------------------------------------
KERAS = FIXTURES / "keras"


def keras_edit(w: Work, build, **kw) -> Case:
    """Rewrite model.weights.h5 inside model.keras: ``build(h5 file, first dataset name, shape, dtype)``."""
    import h5py

    src = w.copy(KERAS / "masked-lm")
    archive = next(src.glob("*.keras"))
    with zipfile.ZipFile(archive) as a:
        members = {i: a.read(i.filename) for i in a.infolist()}
    inner = w.root / "weights.h5"
    info = next(i for i in members if i.filename.endswith(".weights.h5"))
    inner.write_bytes(members[info])
    with h5py.File(inner, "a") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        name = names[0]
        shape, dtype = f[name].shape, f[name].dtype
        del f[name]
        build(f, name, shape, dtype)
    members[info] = inner.read_bytes()
    inner.unlink()
    with zipfile.ZipFile(archive, "w") as b:
        for i, data in members.items():
            b.writestr(i, data)
    return convert(w, src, "safetensors", mentions=(archive.name,), **kw)


@case("keras-chunked-6gib-no-storage")
def _(w):
    return keras_edit(w, lambda f, n, shape, dtype: f.create_dataset(n, shape=(1 << 20, 1536), dtype="f4",
                                                                     chunks=(1024, 1536)), isolate=True)


@case("keras-integer-dataset")
def _(w):
    return keras_edit(w, lambda f, n, shape, dtype: f.create_dataset(n, data=np.zeros(shape, np.int32)))


@case("keras-nan")
def _(w):
    return keras_edit(w, lambda f, n, shape, dtype: f.create_dataset(n, data=np.full(shape, np.nan, dtype)))


@case("keras-truncated")
def _(w):
    src = w.copy(KERAS / "masked-lm")
    truncate(next(src.glob("*.keras")), 0.5)
    return inspect(next(src.glob("*.keras")), mentions=(".keras",))


# ---- msgpack ---------------------------------------------------------------------------------------
MP = "flax_model.msgpack"


def mp_edit(w: Work, fn, **kw) -> Case:
    from electra_bridge.converters.formats import msgpack_flax

    src = w.copy(FLAX / "masked-lm")
    arrays = msgpack_flax.read_file(src / MP)
    name = fn(arrays)
    (src / MP).write_bytes(msgpack_flax.encode(arrays))
    return convert(w, src, "safetensors", mentions=(MP, *([name] if name else [])), **kw)


def _pick(arrays, part="LayerNorm/bias"):
    return next(k for k in sorted(arrays) if part in k)


@case("msgpack-integer-leaf")
def _(w):
    def fn(a):
        k = _pick(a)
        a[k] = a[k].astype(np.int32)
        return k
    return mp_edit(w, fn)


@case("msgpack-float64-leaf")
def _(w):
    def fn(a):
        k = _pick(a)
        a[k] = a[k].astype(np.float64)
        return k
    return mp_edit(w, fn)


@case("msgpack-bool-leaf")
def _(w):
    def fn(a):
        k = _pick(a)
        a[k] = a[k] > 0
        return k
    return mp_edit(w, fn)


@case("msgpack-nan")
def _(w):
    def fn(a):
        k = _pick(a, "dense/kernel")
        a[k] = a[k] * np.nan
        return k
    return mp_edit(w, fn)


@case("msgpack-shape-contradicts-config")
def _(w):
    def fn(a):
        k = _pick(a, "word_embeddings")
        a[k] = a[k][:-1]
        return "word_embeddings"
    return mp_edit(w, fn)


@case("msgpack-missing-leaf")
def _(w):
    def fn(a):
        k = _pick(a, "dense/kernel")
        del a[k]
        return None
    return mp_edit(w, fn)


for _frac in (0.0, 0.002, 0.5, 0.999):
    @case(f"msgpack-truncated-{_frac}")
    def _(w, frac=_frac):
        src = w.copy(FLAX / "masked-lm")
        truncate(src / MP, frac)
        return inspect(src / MP, mentions=(MP,))

for _off in (0, 1, 3, 30):
    @case(f"msgpack-bitflip-{_off}")
    def _(w, off=_off):
        src = w.copy(FLAX / "masked-lm")
        flip(src / MP, off)
        return inspect(src / MP, mentions=(MP,))


@case("msgpack-array-claims-huge-shape")
def _(w):
    import msgpack

    src = w.copy(FLAX / "masked-lm")
    payload = msgpack.packb(((1 << 20, 1 << 20), "float32", b"\0" * 64), use_bin_type=True)
    tree = {"params": {"x": msgpack.ExtType(1, payload)}}
    (src / MP).write_bytes(msgpack.packb(tree, use_bin_type=True))
    return inspect(src / MP, mentions=(MP,), isolate=True)


@case("msgpack-deep-nesting")
def _(w):
    src = w.copy(FLAX / "masked-lm")
    (src / MP).write_bytes(b"\x81\xa1a" * 100_000 + b"\xc0")
    return inspect(src / MP, mentions=(MP,), isolate=True)


@case("msgpack-map-claims-2^32-entries")
def _(w):
    src = w.copy(FLAX / "masked-lm")
    (src / MP).write_bytes(b"\xdf\xff\xff\xff\xff" + b"\xa1a\xc0" * 10)
    return inspect(src / MP, mentions=(MP,), isolate=True)


@case("msgpack-bin-claims-4gib")
def _(w):
    src = w.copy(FLAX / "masked-lm")
    (src / MP).write_bytes(b"\x81\xa6params\x81\xa1x\xc6\xff\xff\xff\xf0" + b"\0" * 100)
    return inspect(src / MP, mentions=(MP,), isolate=True)


@case("msgpack-scalar-leaf")
def _(w):
    import msgpack

    src = w.copy(FLAX / "masked-lm")
    (src / MP).write_bytes(msgpack.packb({"params": {"electra": {"embeddings": {"x": 3}}}}))
    return inspect(src / MP, mentions=(MP,))


# ---- TF1 ------------------------------------------------------------------------------------------

def tf1(w: Work) -> tuple[Path, Path]:
    src = w.copy(TF1 / "pretraining")
    return src, next(src.glob("*.index"))


def tf1_rewrite_index(index: Path, fn) -> None:
    from electra_bridge.converters.formats.tf1_table import build_table, read_table

    items = read_table(index)
    index.write_bytes(build_table(fn(items)))


def tf1_edit_first_entry(index: Path, marker: bytes, **fields) -> None:
    """Rewrite the index so the first tensor whose name holds ``marker`` claims ``fields`` instead."""
    from electra_bridge.converters.formats import tf1_bundle as b

    def fn(items):
        out, done = [], False
        for k, v in items:
            if k and marker in k and not done:
                v = b.encode_entry(dataclasses.replace(b.parse_entry(k.decode(), v), **fields))
                done = True
            out.append((k, v))
        return out
    tf1_rewrite_index(index, fn)


@case("tf1-checkpoint-absolute-path")
def _(w):
    other = w.copy(TF1 / "pretraining", "elsewhere-bundle")
    src, index = tf1(w)
    for p in src.glob("model.ckpt-*"):
        p.unlink()
    (src / "checkpoint").write_text(f'model_checkpoint_path: "{other}/model.ckpt-1000"\n')
    return convert(w, src, "safetensors", mentions=("checkpoint",))


@case("tf1-checkpoint-dotdot")
def _(w):
    w.copy(TF1 / "pretraining", "sibling")
    src, index = tf1(w)
    for p in src.glob("model.ckpt-*"):
        p.unlink()
    (src / "checkpoint").write_text('model_checkpoint_path: "../sibling/model.ckpt-1000"\n')
    return inspect(src, mentions=("checkpoint",))


@case("tf1-checkpoint-huge-state-file")
def _(w):
    src, index = tf1(w)
    with open(src / "checkpoint", "r+b") as fh:
        fh.write(b'model_checkpoint_path: "model.ckpt-7"\n')
        fh.truncate(1 << 30)
    return inspect(src, mentions=("checkpoint",), isolate=True)


@case("tf1-num-shards-1e9")
def _(w):
    from electra_bridge.converters.formats.tf1_bundle import encode_header

    src, index = tf1(w)
    tf1_rewrite_index(index, lambda items: [(b"", encode_header(10 ** 9)), *items[1:]])
    return inspect(src, mentions=(index.name,), isolate=True)


@case("tf1-num-shards-zero")
def _(w):
    from electra_bridge.converters.formats.tf1_bundle import encode_header

    src, index = tf1(w)
    tf1_rewrite_index(index, lambda items: [(b"", encode_header(0)), *items[1:]])
    return inspect(src, mentions=(index.name,))


@case("tf1-block-handle-repeated-200000")
def _(w):
    from electra_bridge.converters.formats.tf1_table import (FOOTER_SIZE, TABLE_MAGIC, BlockBuilder, crc32c,
                                                              encode_varint, mask, read_table)

    src, index = tf1(w)
    items = read_table(index)
    block = BlockBuilder(16)
    for k, v in items:
        block.add(k, v)
    out = bytearray()

    def flush(contents: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(contents + b"\0" + struct.pack("<I", mask(crc32c(b"\0", crc32c(contents)))))
        return offset, len(contents)
    offset, size = flush(block.finish())
    handle = encode_varint(offset) + encode_varint(size)
    idx = BlockBuilder(1)
    for i in range(200_000):
        idx.add(b"\xff" * 4 + i.to_bytes(4, "big"), handle)
    meta = flush(BlockBuilder(16).finish())
    io_, is_ = flush(idx.finish())
    handles = b"".join(encode_varint(x) for x in (*meta, io_, is_))
    out.extend(handles + b"\0" * (FOOTER_SIZE - 8 - len(handles)) + struct.pack("<Q", TABLE_MAGIC))
    index.write_bytes(bytes(out))
    return inspect(src, mentions=(index.name,), isolate=True)


@case("tf1-tensor-offset-beyond-shard")
def _(w):
    src, index = tf1(w)
    tf1_edit_first_entry(index, b"LayerNorm/beta", offset=1 << 40)
    return convert(w, src, "safetensors", mentions=("LayerNorm/beta",), isolate=True)


@case("tf1-tensor-size-1e12")
def _(w):
    src, index = tf1(w)
    tf1_edit_first_entry(index, b"dense/kernel", shape=(1 << 20, 1 << 18), size=1 << 40)
    return convert(w, src, "safetensors", mentions=("kernel",), isolate=True)


@case("tf1-integer-weight")
def _(w):
    src, index = tf1(w)
    tf1_edit_first_entry(index, b"LayerNorm/gamma", dtype_enum=3)   # DT_INT32
    return convert(w, src, "safetensors", mentions=("LayerNorm/gamma",))


@case("tf1-data-bitflip")
def _(w):
    src, index = tf1(w)
    data = next(src.glob("*.data-*"))
    flip(data, 1000, 0x01)
    return convert(w, src, "safetensors", mentions=(data.name,))


@case("tf1-data-truncated")
def _(w):
    src, index = tf1(w)
    data = next(src.glob("*.data-*"))
    truncate(data, 0.5)
    return convert(w, src, "safetensors", mentions=(data.name,))


@case("tf1-data-missing")
def _(w):
    src, index = tf1(w)
    next(src.glob("*.data-*")).unlink()
    return inspect(src, mentions=("data-00000-of-00001",))


@case("tf1-data-fifo")
def _(w):
    src, index = tf1(w)
    fifo(next(src.glob("*.data-*")))
    return convert(w, src, "safetensors", mentions=("data-00000",), isolate=True)


for _frac in (0.0, 0.3, 0.9, 0.999):
    @case(f"tf1-index-truncated-{_frac}")
    def _(w, frac=_frac):
        src, index = tf1(w)
        truncate(index, frac)
        return inspect(index, mentions=(index.name,))

for _off in (0, 17, 100, -44, -45, -1):
    @case(f"tf1-index-bitflip-{_off}")
    def _(w, off=_off):
        src, index = tf1(w)
        flip(index, off, 0x10)
        return inspect(index, mentions=(index.name,))


@case("tf1-index-snappy-claims-huge")
def _(w):
    from electra_bridge.converters.formats.tf1_table import (FOOTER_SIZE, TABLE_MAGIC, crc32c, encode_varint, mask)

    src, index = tf1(w)
    body = encode_varint(1 << 40) + b"\x00a" * 8
    block = body + b"\x01" + struct.pack("<I", mask(crc32c(b"\x01", crc32c(body))))
    handles = encode_varint(0) + encode_varint(len(body)) + encode_varint(0) + encode_varint(len(body))
    index.write_bytes(block + handles + b"\0" * (FOOTER_SIZE - 8 - len(handles)) + struct.pack("<Q", TABLE_MAGIC))
    return inspect(index, mentions=(index.name,), isolate=True)


@case("tf1-config-fifo")
def _(w):
    src, index = tf1(w)
    fifo(w.root / "hparams.json")
    return Case(["convert", str(src), str(w.out), "--to", "safetensors", "--config", str(w.root / "hparams.json")],
                mentions=("hparams.json",), isolate=True, out=w.out)


@case("tf1-config-dev-zero")
def _(w):
    src, index = tf1(w)
    return Case(["convert", str(src), str(w.out), "--to", "safetensors", "--config", "/dev/zero"],
                mentions=("/dev/zero",), isolate=True, out=w.out)


@case("tf1-hparams-layers-1e9")
def _(w):
    src, index = tf1(w)
    (w.root / "hparams.json").write_text(json.dumps({"model_size": "small", "vocab_size": 108,
                                                     "model_hparam_overrides": {"num_hidden_layers": 10 ** 9}}))
    return Case(["convert", str(src), str(w.out), "--to", "safetensors", "--config", str(w.root / "hparams.json")],
                mentions=("num_hidden_layers",), out=w.out)


@case("tf1-hparams-wrong-types")
def _(w):
    src, index = tf1(w)
    (w.root / "hparams.json").write_text(json.dumps({"model_size": "small", "embedding_size": "big",
                                                     "model_hparam_overrides": {"hidden_size": "x"}}))
    return Case(["convert", str(src), str(w.out), "--to", "safetensors", "--config", str(w.root / "hparams.json")],
                mentions=("hparams",), out=w.out)


@case("tf1-data-symlink-outside")
def _(w):
    src, index = tf1(w)
    data = next(src.glob("*.data-*"))
    target = outside(w, data.name, data.read_bytes())
    symlink(data, target)
    return convert(w, src, "safetensors", mentions=(data.name, "outside"))


@case("tf1-index-symlink-outside")
def _(w):
    src, index = tf1(w)
    target = outside(w, index.name, index.read_bytes())
    symlink(index, target)
    return convert(w, src, "safetensors", mentions=(index.name, "outside"))


@case("tf1-fifo-index-beside-no-state-file")
def _(w):
    src, index = tf1(w)
    (src / "checkpoint").unlink()
    fifo(src / "model.ckpt-2000.index")
    for p in src.glob("model.ckpt-1000*"):
        p.unlink()
    return inspect(src, mentions=("src",), isolate=True)


# ---- pytorch_model.bin (torch) ---------------------------------------------------------------------

@case("bin-pickle-payload")
def _(w):
    src = w.copy(BIN / "masked-lm")
    payload = (b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(f"touch {w.sentinel}"))
               + f"touch {w.sentinel}".encode() + b"q\x01\x85q\x02Rq\x03.")
    (src / "pytorch_model.bin").write_bytes(payload)
    return inspect(src, mentions=("pytorch_model.bin",), extra="torch")


@case("bin-zip-pickle-payload")
def _(w):
    src = w.copy(BIN / "masked-lm")
    path = src / "pytorch_model.bin"
    with zipfile.ZipFile(path) as a:
        names = a.namelist()
        members = {n: a.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    cmd = f"touch {w.sentinel}".encode()
    members[pkl] = b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
    with zipfile.ZipFile(path, "w") as b:
        for n in names:
            b.writestr(n, members[n])
    return inspect(src, mentions=("pytorch_model.bin",), extra="torch")


@case("bin-truncated")
def _(w):
    src = w.copy(BIN / "masked-lm")
    truncate(src / "pytorch_model.bin", 0.5)
    return inspect(src, mentions=("pytorch_model.bin",), extra="torch")


# ---- torch artifacts: every way torch.export.load would run code -----------------------------------

def pt2_case(kind: str):
    @case(f"pt2-{kind}")
    def _(w):
        import test_hardening as th

        src = w.artifact("torch-export", "masked-lm")
        original = src / "model.pt2"
        tmp = w.root / "orig.pt2"
        shutil.move(original, tmp)
        th.ATTACKS[kind][0](tmp, original, w.sentinel)
        tmp.unlink()
        cmd = ["verify", str(src), str(HF / "masked-lm")] if kind.startswith("p") else ["inspect", str(src)]
        return Case(cmd, mentions=("model.pt2",), extra="torch")


for _kind in ("pickled-sample-inputs", "guards-code", "sympify-expression", "node-target", "aotinductor-member",
              "pickled-weight"):
    pt2_case(_kind)


@case("pt2-truncated")
def _(w):
    src = w.artifact("torch-export", "masked-lm")
    truncate(src / "model.pt2", 0.5)
    return Case(["verify", str(src / "model.pt2"), str(HF / "masked-lm")], mentions=("model.pt2",), extra="torch")


@case("pt2-bad-metadata")
def _(w):
    src = w.artifact("torch-export", "masked-lm")
    path = src / "model.pt2"
    with zipfile.ZipFile(path) as a:
        members = {i: a.read(i.filename) for i in a.infolist()}
    with zipfile.ZipFile(path, "w") as b:
        for info, data in members.items():
            if info.filename.endswith("electra_bridge.json"):
                meta = json.loads(data)
                meta["config"]["num_labels"] = 10 ** 9
                meta["config"].pop("id2label")
                data = json.dumps(meta).encode()
            b.writestr(info, data)
    return Case(["inspect", str(src)], mentions=("model.pt2",), extra="torch")


@case("torchscript-truncated")
def _(w):
    src = w.artifact("torchscript", "masked-lm")
    truncate(src / "model.pt", 0.6)
    return Case(["inspect", str(src / "model.pt")], mentions=("model.pt",), extra="torch")


@case("torchscript-fifo")
def _(w):
    src = w.artifact("torchscript", "masked-lm")
    fifo(src / "model.pt")
    return Case(["inspect", str(src / "model.pt"), "--from", "torchscript"], mentions=("model.pt",), extra="torch",
                isolate=True)


# ---- ONNX ------------------------------------------------------------------------------------------

def onnx_edit(w: Work, fn, *, verify: bool = True) -> Case:
    import onnx

    src = w.artifact("onnx")
    model = onnx.load(str(src / "model.onnx"))
    fn(model, w)
    onnx.save(model, str(src / "model.onnx"))
    argv = ["verify", str(src), str(HF / "sequence-classification")] if verify else ["inspect", str(src)]
    return Case(argv, mentions=("model.onnx",), extra="onnx")


def _external(location: str, offset: int = 0, length: int | None = None):
    def fn(model, w):
        from onnx import TensorProto

        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)),
                     *((("length", str(length)),) if length is not None else ())):
            e = t.external_data.add()
            e.key, e.value = k, v
    return fn


for _name, _loc in (("dotdot", "../elsewhere/outside.bin"), ("absolute", "/etc/hostname"),
                    ("missing", "nothere.bin")):
    @case(f"onnx-external-data-{_name}")
    def _(w, loc=_loc):
        outside(w)
        return onnx_edit(w, _external(loc))


@case("onnx-external-data-beyond-file")
def _(w):
    def fn(model, w):
        (w.root / "src" / "weights.bin").write_bytes(b"\0" * 16)
        _external("weights.bin", 0, 1 << 40)(model, w)
    return onnx_edit(w, fn)


@case("onnx-external-data-symlink-outside")
def _(w):
    def fn(model, w):
        symlink(w.root / "src" / "weights.bin", outside(w))
        _external("weights.bin")(model, w)
    return onnx_edit(w, fn)


@case("onnx-custom-domain")
def _(w):
    def fn(model, w):
        model.graph.node[0].domain = "evil.custom"
    return onnx_edit(w, fn)


def _meta(**changes):
    def fn(model, w):
        for p in model.metadata_props:
            if p.key == "electra_bridge.config":
                cfg = json.loads(p.value)
                for k, v in changes.items():
                    if v is None:
                        cfg.pop(k, None)
                    else:
                        cfg[k] = v
                p.value = json.dumps(cfg)
    return fn


@case("onnx-metadata-labels-1e9")
def _(w):
    return onnx_edit(w, _meta(num_labels=10 ** 9, id2label=None, label2id=None), verify=False)


@case("onnx-metadata-layers-1e9")
def _(w):
    return onnx_edit(w, _meta(num_hidden_layers=10 ** 9))


@case("onnx-metadata-not-json")
def _(w):
    def fn(model, w):
        for p in model.metadata_props:
            if p.key == "electra_bridge.config":
                p.value = "{oops"
    return onnx_edit(w, fn, verify=False)


@case("onnx-truncated")
def _(w):
    src = w.artifact("onnx")
    truncate(src / "model.onnx", 0.5)
    return Case(["inspect", str(src / "model.onnx"), "--from", "onnx"], mentions=("model.onnx",), extra="onnx")


@case("onnx-fifo")
def _(w):
    src = w.artifact("onnx")
    fifo(src / "model.onnx")
    return Case(["inspect", str(src / "model.onnx"), "--from", "onnx"], mentions=("model.onnx",), extra="onnx",
                isolate=True)


# ---- CLI paths: OUT, --inputs, --report ----------------------------------------------------------

@case("out-is-src")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["convert", str(src), str(src), "--to", "safetensors", "--force"], mentions=("src",))


@case("out-is-src-parent")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["convert", str(src), str(w.root), "--to", "safetensors", "--force"], mentions=("src",))


@case("out-is-src-config")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["convert", str(src), str(src / CFG), "--to", "safetensors", "--force"], mentions=(CFG,))


@case("out-is-working-folder")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["convert", str(src), ".", "--to", "safetensors", "--force"], cwd=w.root, mentions=(".",))


@case("out-is-foreign-folder")
def _(w):
    src = w.copy(HF / "masked-lm")
    mine = w.copy(FLAX / "masked-lm", "theirs")
    return Case(["convert", str(src), str(mine), "--to", "safetensors", "--force"], mentions=("theirs",))


@case("out-parent-is-a-file")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["convert", str(src), str(src / CFG / "out"), "--to", "safetensors"], mentions=(CFG,))


def inputs_case(w: Work, write) -> Case:
    path = w.root / "src" / "inputs.npz"
    path.parent.mkdir(exist_ok=True)
    write(path)
    return Case(["verify", str(HF / "masked-lm"), str(HF / "masked-lm"), "--inputs", str(path)],
                mentions=("inputs.npz",))


def _npz_claim(path: Path, shape, descr="<i8"):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input_ids.npy", header.getvalue() + b"\0" * 64)


@case("inputs-huge-claim")
def _(w):
    c = inputs_case(w, lambda p: _npz_claim(p, (1 << 20, 1 << 20)))
    c.isolate = True
    return c


@case("inputs-object-array")
def _(w):
    return inputs_case(w, lambda p: _npz_claim(p, (2, 3), "|O"))


@case("inputs-not-npz")
def _(w):
    return inputs_case(w, lambda p: p.write_text("input_ids = [[1, 2, 3]]"))


@case("inputs-npy-not-npz")
def _(w):
    return inputs_case(w, lambda p: np.save(open(p, "wb"), np.zeros((2, 3), np.int64)))


@case("inputs-float-ids")
def _(w):
    return inputs_case(w, lambda p: np.savez(p, input_ids=np.zeros((2, 3), np.float32)))


@case("inputs-ids-out-of-vocab")
def _(w):
    return inputs_case(w, lambda p: np.savez(p, input_ids=np.full((2, 3), 10 ** 6, np.int64)))


@case("inputs-unknown-array")
def _(w):
    return inputs_case(w, lambda p: np.savez(p, input_ids=np.ones((2, 3), np.int64), payload=np.ones(3)))


@case("inputs-shape-mismatch")
def _(w):
    return inputs_case(w, lambda p: np.savez(p, input_ids=np.ones((2, 3), np.int64),
                                             attention_mask=np.ones((2, 4), np.int64)))


@case("inputs-fifo")
def _(w):
    c = inputs_case(w, lambda p: os.mkfifo(p))
    c.isolate = True
    return c


@case("inputs-dev-zero")
def _(w):
    c = inputs_case(w, lambda p: os.symlink("/dev/zero", p))
    c.isolate = True
    return c


@case("inputs-missing")
def _(w):
    return inputs_case(w, lambda p: None)


@case("report-folder-is-a-file")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["verify", str(src), str(src), "--report", str(src / CFG / "r.json")], mentions=("r.json",))


@case("report-folder-missing")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["verify", str(src), str(src), "--report", str(w.root / "no" / "r.md")], mentions=("r.md",))


@case("report-wrong-suffix")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["verify", str(src), str(src), "--report", str(w.root / "r.exe")], mentions=("r.exe",))


@case("plot-wrong-suffix")
def _(w):
    src = w.copy(HF / "masked-lm")
    return Case(["verify", str(src), str(src), "--plot", str(w.root / "drift.svg")], mentions=("drift.svg",))


@case("source-missing")
def _(w):
    return convert(w, w.root / "nothing-here", "safetensors", mentions=("nothing-here",))


@case("source-empty-folder")
def _(w):
    (w.root / "src").mkdir()
    return inspect(w.root / "src", mentions=("src",))


if __name__ == "__main__":  # list the case ids
    print("\n".join(CASES), file=sys.stdout)
    print(len(CASES), "cases", file=sys.stderr)
