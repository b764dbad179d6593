"""Opening an exported ONNX artifact (converters/formats/onnx.py writes it): ``inspect`` describes it,
``open_runner`` runs it with ONNX Runtime. Both confine the model's external data as every read is
confined (engine/files.py): to the model's folder, or for a Hugging Face cache snapshot, whose files
are links into blobs/, to the repo folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from electra_bridge.runtimes.onnx_runner import HIDDEN_PREFIX, OnnxRunner, describe, model_path

from ..engine import extras, files
from ..engine.assets import collect

#: suffixes of what ONNX Runtime's quantizer stores beside a weight's int8 copy ``<name>_quantized``
QUANTIZER_SIDE_TENSORS = ("_scale", "_zero_point")


def parameters(model) -> list:
    """The initializers holding the checkpoint's parameters, each once: not the graph's constants
    (``/const_*``: shapes, axes, scalars), not an input's default (causal-lm ``token_type_ids``),
    and of an int8 weight its ``_quantized`` copy but not its scale and zero point. Fusion packs
    q|k|v into one tensor of the same size and transposed weights keep their size, so the count
    equals the source checkpoint's ``num_parameters`` (a tied decoder is stored once)."""
    names = {t.name for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}

    def side(name: str) -> bool:
        return any(name.endswith(s) and f"{name[:-len(s)]}_quantized" in names for s in QUANTIZER_SIDE_TENSORS)

    return [t for t in model.graph.initializer if not t.name.startswith("/") and t.name not in inputs and not side(t.name)]


def inspect(path: Path) -> dict:
    """Head, config, graph kind, dtype, inputs/outputs with their axes, operator counts, parameters."""
    extras.require("onnx", f"inspecting {path}")
    import onnx

    file = model_path(path)
    cfg, head, graph, dtype = describe(file, files.source_root(file))
    model = onnx.load(str(file), load_external_data=False)
    weights = parameters(model)

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    external = file.parent / (file.name + ".data")
    return {
        "head": head,
        "graph": graph,
        "dtype": dtype,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "config": cfg.to_dict(),
        "inputs": {i.name: dims(i) for i in model.graph.input},
        "optional_inputs": [i.name for i in model.graph.input if i.name in {t.name for t in model.graph.initializer}],
        "outputs": {o.name: dims(o) for o in model.graph.output},
        "hidden_states": sum(o.name.startswith(HIDDEN_PREFIX) for o in model.graph.output),   # 0: not exported
        "operators": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "num_parameters": int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in weights)),
        "external_data": external.name if external.exists() else None,
        "assets": sorted(collect(file.parent)),
        "tensors": [{"name": t.name, "shape": list(t.dims),
                     "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name} for t in weights],
    }


def open_runner(path: Path) -> OnnxRunner:
    """ONNX Runtime on CPU, for a folder holding model.onnx or a .onnx file."""
    return OnnxRunner(path, root=files.source_root(model_path(path)))
