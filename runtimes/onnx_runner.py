"""Run an exported ONNX model with ONNX Runtime (CPU) and return ``runtimes.forward.Result``.

The model describes itself through ``metadata_props`` written by converters/formats/onnx.py:
``electra_bridge.head``, ``electra_bridge.config`` (HF config.json text),
``electra_bridge.graph`` ("plain" or "optimized") and ``electra_bridge.dtype``
("float32" or "int8"). A bare .onnx without them falls back to the config.json beside it.

Inputs are int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` ([B, S], or
[B, K, S] for multiple-choice); outputs are float32 numpy arrays named as the head's
outputs (``logits``, ``last_hidden_state``, ``start_logits``/``end_logits``). A graph exported
with ``--hidden-states`` also has the float32 outputs ``hidden_states.0`` (embedding output) ..
``hidden_states.L`` ([B, S, H]; [B*K, S, H] for multiple-choice, as forward.py computes them):
they become ``Result.hidden_states`` (in layer order), so verify reports per-layer drift; a
graph without them gives an empty tuple and verify compares the head outputs only. An input
the graph also holds as an initializer (the causal-lm graph's ``token_type_ids``, zeros by
default) is fed when the batch has it.
Threads: ``threads`` argument, else the ELECTRA_BRIDGE_ORT_THREADS environment variable,
else ONNX Runtime's default.

Hostile files (``check_model``, before ONNX Runtime sees the file): the model must be a regular
file under 2 GiB (protobuf's limit); every external-data tensor must name a regular file inside
the model's folder (no absolute path, no ``..``, no symlink out; a Hugging Face cache snapshot's
caller passes the repo folder as ``root``, since the snapshot's files are links into its blobs/)
holding the bytes it claims;
every node's domain must be the standard one, ``com.microsoft`` (ONNX Runtime's contrib ops)
or a function defined in the model. No custom-op library is ever registered, so no code from
the artifact runs; the config in the metadata is validated like any config.json.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
from electra_bridge.schemas import (
    ElectraConfig,
    FormatError,
    MissingDependencyError,
    SchemaError,
    get_head,
    head_for_architecture,
)

from .forward import Result

MODEL_FILE = "model.onnx"
META_HEAD, META_CONFIG = "electra_bridge.head", "electra_bridge.config"
META_GRAPH, META_DTYPE = "electra_bridge.graph", "electra_bridge.dtype"
THREADS_ENV = "ELECTRA_BRIDGE_ORT_THREADS"
#: output name prefix of the hidden states (``hidden_states.0`` = embeddings), as the torch artifacts name them
HIDDEN_PREFIX = "hidden_states."
#: graph kind -> runtime name (the key of runtimes/verify.py TOLERANCES)
RUNTIME_BY_GRAPH = {"plain": "onnxruntime", "optimized": "onnxruntime-optimized"}


def model_path(path: str | Path) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


#: ONNX protobufs cannot exceed 2 GiB; larger weights live in external data files
MAX_MODEL_BYTES = 2 << 30
#: node domains ONNX Runtime runs without a custom-op library
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def _regular(file: Path, what: str) -> int:
    try:
        st = os.stat(file)
    except OSError as exc:
        raise FormatError(f"{file}: cannot open the {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{file}: the {what} is not a regular file")
    return st.st_size


def _load(path: Path):
    import onnx

    if _regular(path, "ONNX model") > MAX_MODEL_BYTES:
        raise FormatError(f"{path} is larger than the 2 GiB an ONNX protobuf can be")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        raise FormatError(f"{path} is not a readable ONNX model: {str(exc)[:300]}") from exc


def _graphs(graph):
    """``graph`` and every subgraph of its nodes' attributes (If/Loop/Scan bodies)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def check_model(path: str | Path, root: Path | None = None):
    """The parsed model (no external data loaded) after the checks of this module's docstring;
    external data must resolve inside ``root`` (default: the model's own folder)."""
    from onnx import TensorProto

    file = model_path(path)
    model = _load(file)
    folder = Path(root).resolve() if root is not None else file.parent.resolve()
    local = {f.domain for f in model.functions}
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in KNOWN_DOMAINS and node.domain not in local:
                raise FormatError(f"{file}: node {node.name or node.op_type!r} uses operator domain {node.domain!r}; "
                                  "only standard ONNX and com.microsoft operators are run (no custom-op libraries)")
        for tensor in graph.initializer:
            if tensor.data_location != TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            location = info.get("location", "")
            target = (file.parent / location)
            if not location or Path(location).is_absolute() or ".." in Path(location).parts \
                    or (target.resolve() != folder and folder not in target.resolve().parents):
                raise FormatError(f"{file}: tensor {tensor.name} keeps its data in {location!r}, outside {folder}; "
                                  "electra-bridge reads only files inside the model's folder (in a Hugging Face "
                                  "cache snapshot: its repo folder)")
            size = _regular(target, f"external data of {tensor.name} (named by {file})")
            try:
                offset, length = int(info.get("offset", 0)), int(info.get("length", size))
            except ValueError:
                raise FormatError(f"{file}: tensor {tensor.name} has a malformed external-data offset/length") from None
            if offset < 0 or length < 0 or offset + length > size:
                raise FormatError(f"{file}: tensor {tensor.name} needs bytes {offset}..{offset + length} of "
                                  f"{location}, which has {size}")
    return model


def read_metadata(path: str | Path, root: Path | None = None) -> dict[str, str]:
    """metadata_props of the model (weights are not loaded), after ``check_model``."""
    return {p.key: p.value for p in check_model(path, root).metadata_props}


def describe(path: str | Path, root: Path | None = None) -> tuple[ElectraConfig, str, str, str]:
    """(config, head, graph kind, dtype) from the model's metadata, else config.json beside it;
    ``root`` as for ``check_model``."""
    file = model_path(path)
    meta = read_metadata(file, root)
    if META_CONFIG in meta:
        try:
            data = json.loads(meta[META_CONFIG])
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{file}: the {META_CONFIG} metadata is not JSON ({exc})") from None
        try:
            cfg = ElectraConfig.from_dict(data)
        except SchemaError as exc:
            raise SchemaError(f"{file}: the {META_CONFIG} metadata: {exc}") from None
    elif (file.parent / "config.json").is_file():
        cfg = ElectraConfig.from_json_file(file.parent / "config.json")
    else:
        raise SchemaError(f"{file} carries no electra-bridge metadata and has no config.json beside it")
    head = meta.get(META_HEAD) or _head_from_config(cfg, file)
    get_head(head)
    return cfg, head, meta.get(META_GRAPH, "plain"), meta.get(META_DTYPE, "float32")


def _head_from_config(cfg: ElectraConfig, file: Path) -> str:
    head = head_for_architecture(cfg.architectures)
    if head is None:
        raise SchemaError(f"{file}: cannot tell the head (no metadata, no architectures in config.json)")
    return head


def _threads(threads: int | None) -> int:
    if threads is not None:
        return int(threads)
    return int(os.environ.get(THREADS_ENV, "0") or 0)


class OnnxRunner:
    """A Runner over an ONNX Runtime CPU session; ``heads`` is the one exported head."""

    def __init__(self, path: str | Path, *, threads: int | None = None, name: str | None = None,
                 root: Path | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("running ONNX models needs onnxruntime: pip install 'electra-bridge[onnx]'") \
                from exc
        self.path = model_path(path)
        if not self.path.is_file():
            raise FormatError(f"{path}: no {MODEL_FILE} found")
        self.config, self.head, self.graph, self.dtype = describe(self.path, root)
        # int8 error (~1e-2) dwarfs fusion error (~1e-6): quantized models of either graph kind
        # share the ("onnxruntime", "int8") tolerance row
        graph_runtime = RUNTIME_BY_GRAPH.get(self.graph, "onnxruntime-optimized")
        self.runtime = "onnxruntime" if self.dtype == "int8" else graph_runtime
        self.heads = (self.head,)
        self.name = name or str(path)
        self.threads = _threads(threads)
        self._session = None

    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        return self._session

    def release(self) -> None:
        self._session = None

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        if head != self.head:
            raise SchemaError(f"{self.name} was exported for head {self.head!r}, not {head!r}")
        session = self.session()
        optional = {i.name for i in session.get_overridable_initializers()}
        feed = {i.name: np.ascontiguousarray(batch[i.name], dtype=np.int64) for i in session.get_inputs()}
        feed.update({name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in optional & set(batch)})
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, feed)))
        states = sorted((n for n in names if n.startswith(HIDDEN_PREFIX)), key=lambda n: int(n[len(HIDDEN_PREFIX):]))
        outputs = {n: v for n, v in values.items() if not n.startswith(HIDDEN_PREFIX)}
        return Result(outputs, tuple(values[n] for n in states))
