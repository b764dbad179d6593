"""Run an exported ONNX model with ONNX Runtime (CPU) and return ``runtimes.forward.Result``.

The model describes itself through ``metadata_props`` written by converters/formats/onnx.py:
``electra_bridge.head``, ``electra_bridge.config`` (HF config.json text),
``electra_bridge.graph`` ("plain" or "optimized") and ``electra_bridge.dtype``
("float32" or "int8"). A bare .onnx without them falls back to the config.json beside it.

Inputs are int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` ([B, S], or
[B, K, S] for multiple-choice); outputs are float32 numpy arrays named as the head's
outputs (``logits``, ``last_hidden_state``, ``start_logits``/``end_logits``). Hidden
states are not exported, so ``Result.hidden_states`` is empty and verify skips drift.
Threads: ``threads`` argument, else the ELECTRA_BRIDGE_ORT_THREADS environment variable,
else ONNX Runtime's default.
"""

from __future__ import annotations

import json
import os
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
#: graph kind -> runtime name (the key of runtimes/verify.py TOLERANCES)
RUNTIME_BY_GRAPH = {"plain": "onnxruntime", "optimized": "onnxruntime-optimized"}


def model_path(path: str | Path) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of the model (weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(model_path(path)), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        raise FormatError(f"{path} is not a readable ONNX model: {exc}") from exc
    return {p.key: p.value for p in model.metadata_props}


def describe(path: str | Path) -> tuple[ElectraConfig, str, str, str]:
    """(config, head, graph kind, dtype) from the model's metadata, else config.json beside it."""
    file = model_path(path)
    meta = read_metadata(file)
    if META_CONFIG in meta:
        cfg = ElectraConfig.from_dict(json.loads(meta[META_CONFIG]))
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

    def __init__(self, path: str | Path, *, threads: int | None = None, name: str | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("running ONNX models needs onnxruntime: pip install 'electra-bridge[onnx]'") \
                from exc
        self.path = model_path(path)
        if not self.path.is_file():
            raise FormatError(f"{path}: no {MODEL_FILE} found")
        self.config, self.head, self.graph, self.dtype = describe(self.path)
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
        feed = {i.name: np.ascontiguousarray(batch[i.name], dtype=np.int64) for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, feed)
        return Result(dict(zip(names, values)), ())
