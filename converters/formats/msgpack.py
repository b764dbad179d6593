"""HF Flax checkpoints: read and write ``flax_model.msgpack`` with ``msgpack`` alone (no JAX, no Flax).

File format (flax.serialization, flax 0.8-0.12; transformers' ``save_pretrained`` calls
``flax.serialization.to_bytes(params)``): one msgpack map, nested by module path, with
**no** ``params`` wrapper and string keys everywhere (layer indices are ``"0"``, ``"1"``).
Leaves are msgpack ExtType code 1 whose payload is itself msgpack: the array
``[shape, dtype name, C-order bytes]``. Code 3 is a numpy scalar in the same encoding,
code 2 a Python complex ``[real, imag]``; neither is a parameter. Arrays above
``MAX_CHUNK_SIZE`` bytes are stored as ``{"__msgpack_chunked_array__": True, "shape":
{"0": d0, ...}, "chunks": {"0": flat part, ...}}``. Sharded saves add
``flax_model.msgpack.index.json`` whose ``weight_map`` keys are ``/``-joined paths.

Native names here are those paths joined with ``/``. Head models put the backbone under
``electra/``; FlaxElectraModel has no prefix. Layout (formats.md sections 2, 3, 6.3):
dense kernels are ``[in, out]`` (transposed to the canonical ``[out, in]``), LayerNorm
weights are ``scale``, embedding tables ``embedding`` (not transposed). A tied generator
stores only ``generator_lm_head/bias`` and multiplies by the word-embedding table; with
``tie_word_embeddings=false`` Flax also stores ``generator_lm_head/kernel`` ``[E, V]``.

Where Flax computes differently from PyTorch (formats.md section 7, traps 4 and 5): its
generator head uses ``hidden_act`` (PT hard-codes gelu) and its SequenceSummary always
pools token 0 (PT honours ``summary_type``). Reading such a file warns; writing one is
refused with a SchemaError, because transformers' Flax class would not compute what the
source computes. (Flax's default token_type_ids of ONES is a runtime trap: pass explicit
ids to FlaxElectra*; our runtimes default to zeros like PyTorch.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from electra_bridge.schemas import (
    ARCHITECTURE_TO_HEAD, TIES, Checkpoint, ElectraConfig, FormatError, LazyTensor, SchemaError, detect_head,
    expected_shapes, get_head, materialize,
)
from electra_bridge.schemas.tensors import BACKBONE_GROUPS

from . import assets
from .rules import IDENTITY, TRANSPOSE, Binding, Ignored, Layout, Rule, account, bind

log = logging.getLogger(__name__)

NAME = "msgpack"
KIND = "checkpoint"
DESCRIPTION = "HF Flax: flax_model.msgpack (sharded or not) with config.json; read and written without JAX/Flax"

WEIGHTS, INDEX = "flax_model.msgpack", "flax_model.msgpack.index.json"
PREFIX = "electra/"
SEP = "/"

#: flax.serialization's ExtType codes
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3
#: flax.serialization.MAX_CHUNK_SIZE: msgpack caps one object at 2**31-1 bytes, flax splits arrays above 2**30
MAX_CHUNK_SIZE = 2**30
CHUNKED = "__msgpack_chunked_array__"
WRITABLE_DTYPES = ("float32", "float16")
READ_SIZE = 1 << 20


# ---- the rules table ------------------------------------------------------------------------------

def _dense(canonical: str, native: str) -> tuple[Rule, Rule]:
    """flax.linen.Dense: kernel [in, out] <-> torch [out, in]."""
    return Rule(f"{canonical}.weight", f"{native}/kernel", TRANSPOSE), Rule(f"{canonical}.bias", f"{native}/bias")


def _layer_norm(canonical: str, native: str) -> tuple[Rule, Rule]:
    return Rule(f"{canonical}.weight", f"{native}/scale"), Rule(f"{canonical}.bias", f"{native}/bias")


def _embedding(canonical: str, native: str) -> Rule:
    return Rule(f"{canonical}.weight", f"{native}/embedding")  # [rows, width] in both: no transpose


_L, _FL = "encoder.layer.{layer}", "encoder/layer/{layer}"

#: canonical template -> native path template (without the ``electra/`` prefix of head models)
RULES: tuple[Rule, ...] = (
    _embedding("embeddings.word_embeddings", "embeddings/word_embeddings"),
    _embedding("embeddings.position_embeddings", "embeddings/position_embeddings"),
    _embedding("embeddings.token_type_embeddings", "embeddings/token_type_embeddings"),
    *_layer_norm("embeddings.LayerNorm", "embeddings/LayerNorm"),
    *_dense("embeddings_project", "embeddings_project"),
    *_dense(f"{_L}.attention.self.query", f"{_FL}/attention/self/query"),
    *_dense(f"{_L}.attention.self.key", f"{_FL}/attention/self/key"),
    *_dense(f"{_L}.attention.self.value", f"{_FL}/attention/self/value"),
    *_dense(f"{_L}.attention.output.dense", f"{_FL}/attention/output/dense"),
    *_layer_norm(f"{_L}.attention.output.LayerNorm", f"{_FL}/attention/output/LayerNorm"),
    *_dense(f"{_L}.intermediate.dense", f"{_FL}/intermediate/dense"),
    *_dense(f"{_L}.output.dense", f"{_FL}/output/dense"),
    *_layer_norm(f"{_L}.output.LayerNorm", f"{_FL}/output/LayerNorm"),
    *_dense("discriminator_predictions.dense", "discriminator_predictions/dense"),
    *_dense("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_prediction"),
    *_dense("generator_predictions.dense", "generator_predictions/dense"),
    *_layer_norm("generator_predictions.LayerNorm", "generator_predictions/LayerNorm"),
    # untied only (FlaxElectraTiedDense keeps just the bias when tied): kernel [E, V] <-> weight [V, E]
    Rule("generator_lm_head.weight", "generator_lm_head/kernel", TRANSPOSE),
    Rule("generator_lm_head.bias", "generator_lm_head/bias"),
    *_dense("classifier.dense", "classifier/dense"),
    *_dense("classifier.out_proj", "classifier/out_proj"),
    *_dense("sequence_summary.summary", "sequence_summary/summary"),
    *_dense("classifier", "classifier"),  # multiple-choice [1, H] and token-classification [C, H]
    *_dense("qa_outputs", "qa_outputs"),
)

#: transformers' Flax params hold parameters only: nothing is dropped on purpose.
IGNORED: tuple[Ignored, ...] = ()

_TIED_KERNEL = "generator_lm_head/kernel"


#: activation names transformers' Flax ACT2FN knows (modeling_flax_utils.py, 4.57.6); others raise KeyError there
FLAX_ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_pytorch_tanh", "tanh")


def flax_divergences(cfg: ElectraConfig, head: str) -> list[str]:
    """Settings under which transformers' Flax class computes something else than PT (and we) do, or cannot run."""
    out = []
    if cfg.hidden_act not in FLAX_ACTIVATIONS:
        out.append(f"hidden_act={cfg.hidden_act!r}: transformers' Flax ACT2FN has no such activation "
                   f"(it knows {', '.join(FLAX_ACTIVATIONS)})")
    if head == "multiple-choice" and cfg.summary_activation and cfg.summary_activation not in FLAX_ACTIVATIONS:
        out.append(f"summary_activation={cfg.summary_activation!r}: transformers' Flax ACT2FN has no such activation")
    if head in ("masked-lm", "causal-lm") and cfg.hidden_act != "gelu":
        out.append(f"hidden_act={cfg.hidden_act!r}: FlaxElectra's generator head applies hidden_act, PyTorch, "
                   "TensorFlow and electra-bridge hard-code exact gelu there")
    if head == "multiple-choice" and cfg.summary_type != "first":
        out.append(f"summary_type={cfg.summary_type!r}: FlaxElectraSequenceSummary always pools the first token, "
                   "PyTorch and electra-bridge honour summary_type")
    return out


# ---- msgpack decoding (flax.serialization's format, without flax) ---------------------------------

def _widen_bfloat16(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """bfloat16 is the top half of a float32: widening is exact and needs no ml_dtypes."""
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


#: msgpack bin markers -> width of their length field
_BIN_LENGTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def _split_payload(data: bytes) -> tuple[list, bytes, memoryview]:
    """(shape, dtype name, raw bytes) of flax's inner ``[shape, dtype, bin]`` without copying the bytes.

    The small header is unpacked by msgpack; the bin's bytes are returned as a view into
    ``data``, so an array costs its ext payload only (no second copy)."""
    import msgpack

    header = msgpack.Unpacker(raw=True)
    header.feed(data[:512])  # shape + dtype name: a few dozen bytes
    if header.read_array_header() != 3:
        raise ValueError("expected a 3-item array")
    shape, dtype_name = header.unpack(), header.unpack()
    at = header.tell()
    width = _BIN_LENGTH.get(data[at])
    if width is None:
        raise ValueError(f"expected bin data, found marker {data[at]:#x}")
    size = int.from_bytes(data[at + 1:at + 1 + width], "big")
    start = at + 1 + width
    if start + size != len(data):
        raise ValueError("array bytes do not end the entry")
    return shape, dtype_name, memoryview(data)[start:]


def _array_from_payload(data: bytes) -> np.ndarray:
    import msgpack

    try:
        shape, dtype_name, raw = _split_payload(data)
        shape = tuple(int(d) for d in shape)
        name = dtype_name.decode("ascii")
        if name == "bfloat16":
            return _widen_bfloat16(raw, shape)
        arr = np.frombuffer(raw, dtype=np.dtype(name)).reshape(shape)
    except (ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError, msgpack.UnpackException) as exc:
        raise FormatError(f"an array entry is not flax's (shape, dtype, bytes) encoding: {exc}") from None
    return arr


def _ext_hook(code: int, data: bytes) -> Any:
    import msgpack

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


def _flatten(node: Mapping, source: str, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and CHUNKED in value:
            value = _unchunk(value, f"{source}: {name}")
        if isinstance(value, Mapping):
            yield from _flatten(value, source, name + SEP)
        elif isinstance(value, np.ndarray):
            yield name, value
        else:
            raise FormatError(f"{source}: entry {name!r} is a {type(value).__name__}, not an array; "
                              "this is not a transformers Flax parameter file")


def decode(source) -> dict[str, np.ndarray]:
    """msgpack bytes or a binary file -> {"/"-joined path: numpy array}, as flax.serialization.msgpack_restore.

    Streams through msgpack.Unpacker: besides the decoded arrays, memory holds one read
    buffer and the largest single array's encoding, never the whole file.
    """
    import io

    import msgpack

    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    unpacker = msgpack.Unpacker(fh, ext_hook=_ext_hook, raw=False, strict_map_key=False, read_size=READ_SIZE,
                                max_buffer_size=2**31 - 1)  # msgpack's own per-object ceiling
    try:
        tree = unpacker.unpack()
    except msgpack.OutOfData:
        raise FormatError("the msgpack data ends early (truncated file?)") from None
    except (ValueError, msgpack.UnpackException) as exc:
        raise FormatError(f"not a msgpack file: {exc}") from None
    if not isinstance(tree, Mapping):
        raise FormatError(f"the msgpack top level is a {type(tree).__name__}, not a map of parameters")
    if unpacker.tell() != _size(fh):
        raise FormatError("extra data after the parameter map")
    return dict(_flatten(tree, "msgpack"))


def _size(fh) -> int:
    here = fh.tell()
    end = fh.seek(0, 2)
    fh.seek(here)
    return end


def _load_file(path: Path) -> dict[str, np.ndarray]:
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


def _load_index(index: Path) -> dict[str, np.ndarray]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{index} is not a valid shard index ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index.parent / shard
        if not shard_path.exists():
            raise FormatError(f"{index.name} names shard {shard}, which is missing")
        out.update({k: v for k, v in _load_file(shard_path).items() if weight_map.get(k) == shard})
    absent = sorted(set(weight_map) - set(out))
    if absent:
        raise FormatError(f"{index.name} lists tensors no shard holds: {', '.join(absent[:8])}")
    return out


# ---- detection and reading ------------------------------------------------------------------------

def _weights_file(path: Path) -> Path | None:
    if path.is_dir():
        return next((path / f for f in (WEIGHTS, INDEX) if (path / f).exists()), None)
    if path.name.endswith((".msgpack", ".msgpack.index.json")):
        return path
    return None


def detect(path: Path) -> bool:
    return _weights_file(Path(path)) is not None


def _strip_prefix(native: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Drop the ``electra/`` level of head models; a bare ``params`` wrapper (a flax train state) is unwrapped."""
    if native and all(n.startswith("params/") for n in native):
        log.warning("%s: parameters sit under a 'params' key (a flax train state, not a transformers save); "
                    "reading inside it", source)
        native = {n[len("params/"):]: a for n, a in native.items()}
    if any(n.startswith(PREFIX) for n in native):
        return {(n[len(PREFIX):] if n.startswith(PREFIX) else n): a for n, a in native.items()}
    return native


def _canonical_names(native: Mapping[str, np.ndarray], cfg: ElectraConfig) -> set[str]:
    """Canonical names of the native paths present (for head detection; every head's rules, expanded)."""
    reverse = {}
    for rule in RULES:
        for i in (range(cfg.num_hidden_layers) if "{layer}" in rule.canonical else (0,)):
            reverse[rule.native.format(layer=i)] = rule.canonical.format(layer=i)
    return {reverse[n] for n in native if n in reverse}


def _lazy(binding: Binding, arr: np.ndarray) -> np.ndarray | LazyTensor:
    if binding.layout is IDENTITY:
        return arr
    shape = binding.canonical_shape  # transposed copy made only when the tensor is used
    return LazyTensor(shape, arr.dtype, lambda layout=binding.layout, a=arr: layout.to_canonical(a))


def read(path: str | Path, *, head: str | None = None, config: str | Path | ElectraConfig | None = None) -> Checkpoint:
    """Read transformers' Flax checkpoint (folder, msgpack file or shard index) into a canonical Checkpoint.

    Arrays come back float32 (float16 kept, bfloat16 widened exactly), kernels transposed
    to [out, in] lazily. The head comes from config.json ``architectures``, else from the
    parameter paths present.
    """
    path = Path(path)
    weights = _weights_file(path)
    if weights is None or not weights.exists():
        raise FormatError(f"{path}: no {WEIGHTS} or {INDEX} found")
    cfg = assets.config_for(weights, config)
    native = _load_index(weights) if weights.name.endswith(".index.json") else _load_file(weights)
    native = _strip_prefix(native, str(weights))

    own_head = next((ARCHITECTURE_TO_HEAD[a] for a in cfg.architectures if a in ARCHITECTURE_TO_HEAD), None)
    own_head = own_head or detect_head(_canonical_names(native, cfg), cfg)

    if cfg.tie_word_embeddings and _TIED_KERNEL in native:  # a tied alias stored anyway must equal its target
        table = native.get("embeddings/word_embeddings/embedding")
        if table is not None and not np.array_equal(native[_TIED_KERNEL].T, table):
            raise SchemaError(f"{weights}: {_TIED_KERNEL} should be tied to the word embeddings "
                              f"({TIES['generator_lm_head.weight']}; tie_word_embeddings is true) but differs; "
                              "set tie_word_embeddings=false in config.json if it is untied")
        native = {n: a for n, a in native.items() if n != _TIED_KERNEL}

    cfg = cfg.for_head(own_head)
    bindings = bind(RULES, cfg, own_head)
    account(bindings, {n: tuple(a.shape) for n, a in native.items()}, IGNORED, source=str(weights),
            hint="check that config.json describes this file (sizes, num_labels, architectures, tie_word_embeddings)")
    for problem in flax_divergences(cfg, own_head):
        log.warning("%s: %s; outputs will match PyTorch, not FlaxElectra", weights, problem)
    tensors = {c: _lazy(b, native[b.native]) for c, b in bindings.items()}
    ckpt = Checkpoint(cfg, own_head, tensors, assets.collect(weights.parent),
                      {"format": NAME, "path": str(path), "file": weights.name})
    ckpt.validate(str(weights))
    return ckpt.as_head(head) if head and head != own_head else ckpt


# ---- encoding and writing -------------------------------------------------------------------------

def _array_payload(arr: np.ndarray) -> bytes:
    """flax's ``_ndarray_to_bytes``: msgpack of (shape, dtype name, C-order bytes)."""
    import msgpack

    return msgpack.packb((arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True)


def _leaf(arr: np.ndarray) -> Any:
    """One array as flax packs it: an ExtType, or the chunked dict above MAX_CHUNK_SIZE bytes."""
    import msgpack

    if arr.size * arr.dtype.itemsize <= MAX_CHUNK_SIZE:
        return msgpack.ExtType(EXT_NDARRAY, _array_payload(arr))
    step = max(1, MAX_CHUNK_SIZE // arr.dtype.itemsize)
    flat = arr.reshape(-1)
    chunks = [flat[i:i + step] for i in range(0, flat.size, step)]
    return {CHUNKED: True, "shape": {str(i): d for i, d in enumerate(arr.shape)},
            "chunks": {str(i): msgpack.ExtType(EXT_NDARRAY, _array_payload(c)) for i, c in enumerate(chunks)}}


def _tree(names: Mapping[str, Any]) -> dict:
    """{"a/b/c": value} -> nested dict with keys sorted at every level (the order transformers' files have)."""
    root: dict = {}
    for name in sorted(names):
        node = root
        *parents, leaf = name.split(SEP)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = names[name]
    return root


def _pack_tree(tree: Mapping[str, Any], packer, fh, load) -> None:
    """Stream the nested map to ``fh``: one array is materialized and encoded at a time."""
    fh.write(packer.pack_map_header(len(tree)))
    for key in sorted(tree):
        fh.write(packer.pack(key))
        value = tree[key]
        if isinstance(value, dict):
            _pack_tree(value, packer, fh, load)
        else:
            fh.write(packer.pack(_leaf(load(value))))


def encode(tensors: Mapping[str, np.ndarray]) -> bytes:
    """{"/"-joined path: array} -> msgpack bytes, as flax.serialization.msgpack_serialize writes them."""
    import io

    import msgpack

    buf = io.BytesIO()
    _pack_tree(_tree(tensors), msgpack.Packer(use_bin_type=True, strict_types=True), buf, np.asarray)
    return buf.getvalue()


def native_names(ckpt: Checkpoint) -> dict[str, tuple[str, Layout]]:
    """Canonical -> (native path, layout) for this checkpoint's head, ``electra/`` prefix included."""
    bindings = bind(RULES, ckpt.config, ckpt.head)
    backbone = set(expected_shapes(ckpt.config, BACKBONE_GROUPS))
    prefix = "" if ckpt.head == "base" else PREFIX
    return {c: ((prefix + b.native) if c in backbone else b.native, b.layout) for c, b in bindings.items()}


def write(ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Write ``out/flax_model.msgpack`` + ``out/config.json`` (+ assets) as FlaxElectra*.save_pretrained does.

    Byte-compatible with flax.serialization (same key order, sorted at every level).
    A tied generator gets no ``generator_lm_head/kernel``; an untied one gets it [E, V].
    Refuses (SchemaError) configs for which FlaxElectra would compute differently.
    """
    import msgpack

    if options:
        raise SchemaError(f"the msgpack writer takes no options ({', '.join(options)} given)")
    get_head(ckpt.head)
    cfg = ckpt.config.for_head(ckpt.head)
    problems = flax_divergences(cfg, ckpt.head)
    if problems:
        raise SchemaError("refusing to write flax_model.msgpack: transformers' Flax class would not compute what "
                          "this checkpoint computes:\n  " + "\n  ".join(problems)
                          + "\n  fix: keep this model in safetensors (or h5), or retrain with the Flax semantics")
    names = native_names(ckpt)
    leaves = {native: (canonical, layout) for canonical, (native, layout) in names.items()}

    def load(entry: tuple[str, Layout]) -> np.ndarray:
        canonical, layout = entry
        arr = np.ascontiguousarray(layout.to_native(np.asarray(materialize(ckpt.tensors[canonical]))))
        if arr.dtype.name not in WRITABLE_DTYPES:
            raise SchemaError(f"{canonical} is {arr.dtype}; flax_model.msgpack is written as float32 or float16")
        return arr

    with open(out / WEIGHTS, "wb") as fh:
        _pack_tree(_tree(leaves), msgpack.Packer(use_bin_type=True, strict_types=True), fh, load)
    (out / "config.json").write_text(cfg.to_json())
    return [out / WEIGHTS, out / "config.json", *assets.write(out, ckpt.assets)]
