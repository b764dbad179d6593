"""ONNX export of every ELECTRA head, run by ONNX Runtime (an artifact format: written, run, verified).

The graph is emitted by running runtimes/forward.py once over symbolic ONNX ops
(runtimes/ops_onnx.py), so it computes exactly the reference math; no torch,
transformers or Optimum is involved. The folder written is usable like an Optimum export:

    model.onnx           (+ model.onnx.data when the weights pass 2 GB: external data)
    config.json          the checkpoint's HF config for the head
    vocab.txt, tokenizer.json, ...   tokenizer assets of the source

``export`` writes the model files; config.json and the tokenizer files are the engine's
(converters/engine/pipeline.py ``export``). Opening an export (``inspect``, ``open_runner``) is onnx_open.py's.

Graph contract: inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` int64
[batch_size, sequence_length] ([batch_size, num_choices, sequence_length] for
multiple-choice), all axes dynamic (causal-lm: ``token_type_ids`` may be omitted, zeros, as
Optimum's ORTModelForCausalLM omits it); outputs float32, named as Optimum names them
(``last_hidden_state``, ``logits``, ``start_logits`` / ``end_logits``), with ``--hidden-states``
then ``hidden_states.0`` (embeddings) .. ``hidden_states.L`` [batch_size, sequence_length, H]
(multiple-choice: [batch_size*num_choices, ...], as forward.py computes them). The model stores
its head, config, graph kind and dtype in ``metadata_props`` so a bare .onnx is
self-describing.

Opset 17 by default: the first opset with a standard LayerNormalization, which the
optimized graph uses for LayerNorms that have no residual; plain graphs run from opset 15
(Shape with start/end); both up to MAX_OPSET (the newest verified), and ``--opset`` outside
that range is refused naming the option and the range before anything is written. Default graph: optimized for ONNX Runtime on CPU
(runtimes/onnx_fuse.py: Attention, SkipLayerNormalization, BiasGelu/Gelu (exact erf),
LayerNormalization, Softmax contrib and standard ops); ``--plain``: the emitted graph,
standard ONNX ops only, for any ONNX runtime. ``--quantize int8``: ONNX Runtime dynamic
quantization (int8 weights of the dense layers); the convert step still verifies it
against the float32 source and prints the measured logit deviation.

float16 (``convert --dtype float16``, or a float16 checkpoint): the same graph, then
runtimes/onnx_float16.py ``to_float16``: weights and the dense/GELU/residual arithmetic in
float16, while LayerNorm, softmax, the fused Attention kernel and the attention-mask
arithmetic stay float32 (float16 would overflow there); inputs stay int64 and outputs
float32, so the artifact is a drop-in for the float32 one. bfloat16 weights are exported
as float32 (exact: bf16 is the top half of a float32); ``--dtype bfloat16`` to ONNX is
refused (no bfloat16 graph is written: ONNX Runtime's CPU provider lacks the kernels).
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import numpy as np

from electra_bridge.runtimes.onnx_runner import (
    HIDDEN_PREFIX, META_CONFIG, META_DTYPE, META_GRAPH, META_HEAD, MODEL_FILE,
)
from electra_bridge.schemas import HEADS, Checkpoint, MissingDependencyError, SchemaError, get_head
from electra_bridge.schemas.checkpoint import materialize

from ..engine.format import ArtifactFormat
from ..engine.options import Option
from .onnx_open import inspect, open_runner

log = logging.getLogger(__name__)

DATA_FILE = MODEL_FILE + ".data"
DEFAULT_OPSET, MIN_OPSET, MIN_FUSED_OPSET = 17, 15, 17
#: the newest opset exported, run by ONNX Runtime and verified (tests/test_onnx.py ``test_opsets``
#: exports and verifies MIN_OPSET..MAX_OPSET with onnx 1.23 and onnxruntime 1.32); an older onnx
#: or onnxruntime lowers it to what they know (``newest_opset``)
MAX_OPSET = 28
#: protobuf cannot serialize a message of 2 GiB; weights above this go to external data
EXTERNAL_DATA_BYTES = 2 * 1024**3 - 64 * 1024**2
#: one weight is one TensorProto while the graph is built (tests/test_onnx_big.py: 2.18 GB, each below it)
MAX_TENSOR_BYTES = 2 * 1024**3 - 1024**2
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: head -> inputs the graph defaults to zeros when not fed: Optimum's ORTModelForCausalLM feeds
#: input_ids and attention_mask only (transformers' ElectraForCausalLM defaults token_type_ids to zeros)
DEFAULTED_INPUTS = {"causal-lm": ("token_type_ids",)}
#: symbolic shape letters of schemas/heads.py -> dynamic axis names (Optimum's spelling)
AXES = {"B": "batch_size", "S": "sequence_length", "K": "num_choices"}

def _runtime_loads(opset: int) -> bool:
    """Whether the installed ONNX Runtime loads a model of ``opset`` (a one-node probe, a few ms;
    ONNX Runtime refuses opsets newer than it knows at load). True when it is not installed."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return True
    from electra_bridge.runtimes.ops_onnx import IR_VERSION

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    probe = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "opset_probe", [x], [y]),
                              opset_imports=[helper.make_opsetid("", opset)])
    probe.ir_version = IR_VERSION
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 -- ONNX Runtime raises its own Fail/InvalidGraph types
        return False
    return True


@functools.lru_cache(maxsize=None)
def newest_opset() -> int:
    """MAX_OPSET, lowered to the newest opset the installed onnx package knows and the installed
    ONNX Runtime loads (so an out-of-range --opset is refused before export, not by ONNX Runtime
    while verifying)."""
    try:
        import onnx
    except ImportError:
        return MAX_OPSET
    top = min(MAX_OPSET, onnx.defs.onnx_opset_version())
    while top > MIN_OPSET and not _runtime_loads(top):
        top -= 1
    return top


def check_opset(opset: int, plain: bool) -> int:
    """``opset`` if the graph kind supports it, else a SchemaError naming --opset and the valid range."""
    low, high = (MIN_OPSET if plain else MIN_FUSED_OPSET), newest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        hint = (f"; opsets {MIN_OPSET}..{MIN_FUSED_OPSET - 1} need --plain (the optimized graph uses "
                f"LayerNormalization, opset {MIN_FUSED_OPSET})" if not plain and MIN_OPSET <= opset < low else "")
        hint += "" if high == MAX_OPSET else f" (this install's onnx/onnxruntime stop at {high})"
        raise SchemaError(f"--opset {opset}: the {'plain' if plain else 'optimized'} ONNX graph is exported for "
                          f"opsets {low}..{high}{hint}")
    return opset


def _opset_argument(text: str) -> int:
    """argparse ``type`` of --opset: an integer in MIN_OPSET..newest_opset(), checked before any work
    (the optimized graph's higher minimum is checked by export, which knows --plain)."""
    try:
        opset = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer opset") from None
    if not MIN_OPSET <= opset <= newest_opset():
        raise argparse.ArgumentTypeError(f"{opset} is outside the opsets the ONNX export supports, "
                                         f"{MIN_OPSET}..{newest_opset()} (the optimized graph, without --plain: "
                                         f"{MIN_FUSED_OPSET}..{newest_opset()})")
    return opset


OPTIONS = (
    Option("--opset", "write", f"ONNX opset of the exported graph (default {DEFAULT_OPSET}; plain graphs "
           f"{MIN_OPSET}..{MAX_OPSET}, optimized ones {MIN_FUSED_OPSET}..{MAX_OPSET})",
           {"type": _opset_argument, "default": None, "metavar": "N"}),
    Option("--plain", "write", "ONNX export: a portable graph of standard ONNX ops, without ONNX Runtime "
           "fusions (default: fused for ONNX Runtime CPU)", {"action": "store_true", "default": None}),
    Option("--hidden-states", "write", "ONNX export: also output the hidden states (hidden_states.0 = embeddings "
           ".. hidden_states.L, float32), so verify names the first layer where two models part",
           {"action": "store_true", "default": None}),
    Option("--quantize", "write", "ONNX export: dynamic int8 quantization of the dense weights; the measured "
           "logit deviation is reported by the verification", {"choices": ["int8"], "default": None}),
)


# ---- detection -----------------------------------------------------------------------------------

def detect(path: Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / MODEL_FILE).is_file()) or (path.is_file() and path.suffix == ".onnx")


# ---- export --------------------------------------------------------------------------------------

def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ONNX export needs the onnx package: pip install 'electra-bridge[onnx]'") from exc


def _dims(symbols) -> list[str | int]:
    return [AXES.get(s, s) for s in symbols]


def hidden_state_dims(head: str, hidden_size: int) -> list[str | int]:
    """Dims of each ``hidden_states.i`` output: [batch_size, sequence_length, H], or for
    multiple-choice forward.py's flattened [batch_size*num_choices, sequence_length, H]."""
    first = "batch_size_x_num_choices" if get_head(head).choices else "batch_size"
    return [first, "sequence_length", hidden_size]


def build_model(ckpt: Checkpoint, *, opset: int = DEFAULT_OPSET, hidden_states: bool = False):
    """The plain ONNX graph of the checkpoint's head: forward.py over symbolic ops; with
    ``hidden_states`` also the outputs ``hidden_states.0`` (embeddings) .. ``hidden_states.L``."""
    _require_onnx()
    from electra_bridge.runtimes.forward import forward
    from electra_bridge.runtimes.ops_onnx import GraphBuilder, OnnxOps

    head, spec = ckpt.head, get_head(ckpt.head)
    check_opset(opset, plain=True)
    cfg = ckpt.hf_config
    builder = GraphBuilder(opset)
    ops = OnnxOps(builder)
    params = {name: ops.param(name, materialize(t)) for name, t in sorted(ckpt.tensors.items())}
    in_dims = _dims(("B", "K", "S") if spec.choices else ("B", "S"))
    batch = {name: builder.input(name, in_dims) for name in INPUTS}
    result = forward(params, cfg, head, batch, ops)
    symbols = dict(spec.outputs)
    sizes = {"H": cfg.hidden_size, "V": cfg.vocab_size, "C": cfg.num_labels}
    outputs = {name: (result.outputs[name], [sizes.get(s, s) for s in _dims(symbols[name])])
               for name in spec.output_names}
    if hidden_states:
        dims = hidden_state_dims(head, cfg.hidden_size)
        outputs.update({f"{HIDDEN_PREFIX}{i}": (state, dims) for i, state in enumerate(result.hidden_states)})
    metadata = {META_HEAD: head, META_CONFIG: cfg.to_json(), META_GRAPH: "plain", META_DTYPE: "float32"}
    return builder.model(outputs, metadata=metadata, graph_name=f"electra_{head.replace('-', '_')}")


def _set_meta(model, **changes) -> None:
    keys = {"graph": META_GRAPH, "dtype": META_DTYPE}
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({keys[k]: v for k, v in changes.items()})
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


def save(model, path: Path) -> list[Path]:
    """Save ``model`` to ``path``; weights above ~2 GB go to ``model.onnx.data`` beside it."""
    import onnx

    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    if weight_bytes < EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path))
        return [path]
    location = path.name + ".data"
    log.info("weights are %.2f GB: writing them to %s (ONNX external data)", weight_bytes / 1e9, location)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    return [path, path.parent / location]


def quantize_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime dynamic quantization: int8 weights (per tensor), activations quantized per call.

    Only MatMul and Attention are quantized: they hold the time; quantizing the embedding
    Gathers would add error for no speed.
    """
    try:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError("--quantize needs onnxruntime: pip install 'electra-bridge[onnx]'") from exc
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer logs one line per tensor on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
                         # contrib-op outputs have no inferred type; they are all float32 here
                         extra_options={"DefaultTensorType": TensorProto.FLOAT},
                         use_external_data_format=(src.parent / (src.name + ".data")).exists())
    finally:
        logging.disable(previous)


def export(ckpt: Checkpoint, out: Path, *, opset: int | None = None, plain: bool | None = None,
           quantize: str | None = None, hidden_states: bool | None = None) -> list[Path]:
    """Write ``out/model.onnx`` (+ ``model.onnx.data`` for big models; see the module docstring)."""
    if quantize not in (None, "int8"):
        raise SchemaError(f"--quantize supports int8 only, not {quantize!r}")
    opset = check_opset(DEFAULT_OPSET if opset is None else opset, bool(plain))
    from electra_bridge.runtimes.runner import weights_dtype

    half = weights_dtype(ckpt)
    if half == "bfloat16" and ckpt.provenance.get("dtype") == "bfloat16":
        raise SchemaError("onnx cannot be written as bfloat16: electra-bridge writes float32 or float16 ONNX graphs "
                          "(ONNX Runtime's CPU provider has no bfloat16 kernels for most of this graph); "
                          "use --dtype float16, or keep float32")
    if hidden_states and quantize:
        # measured on a random electra-base (tests/test_onnx.py, slow): int8 hidden states drift
        # 0.04 at layer 0 growing to 0.19-0.21 at layer 11, past the int8 row from layer 3-5 on, while
        # the logits stay within it; a correct export would fail its verification on quantization error
        raise SchemaError("--hidden-states with --quantize int8 is refused: int8 hidden states drift past the int8 "
                          "tolerance (0.1 + 0.1*|ref|) at electra-base size (measured up to 0.2 by the last layer, "
                          "while the logits stay within it), so the per-layer drift would fail a correct export and "
                          "name quantization error, not a bug; export float32 with --hidden-states to localize a "
                          "difference, and --quantize int8 without it")
    if half == "float16" and quantize:
        raise SchemaError("--quantize int8 quantizes a float32 graph: drop --dtype float16 (or convert the "
                          "float16 checkpoint with --dtype float32 --quantize int8)")
    for name, size in ((n, np.dtype(t.dtype).itemsize * int(np.prod(t.shape))) for n, t in ckpt.tensors.items()):
        if size >= MAX_TENSOR_BYTES:   # a model above 2 GB whose tensors are each smaller is fine
            raise SchemaError(f"{name} is {size / 2**30:.2f} GiB: the ONNX export builds each weight as one protobuf "
                              "message, which cannot reach 2 GiB; use --dtype float16 to halve it, or another format")
    model = build_model(ckpt, opset=opset, hidden_states=bool(hidden_states))
    if not plain:
        from electra_bridge.runtimes.onnx_fuse import fuse

        # int8: QAttention has no attention_bias input, so the causal mask must go in as
        # unidirectional=1 (runtimes/onnx_fuse.py)
        fusions = fuse(model, ckpt.hf_config, quantizable=bool(quantize))
        log.info("onnx: fused %s", ", ".join(f"{n} {op}" for op, n in sorted(fusions.items())) or "nothing")
        _set_meta(model, graph="optimized")
    if half == "float16":
        from electra_bridge.runtimes.onnx_float16 import to_float16

        counts = to_float16(model, ckpt.hf_config)
        log.info("onnx: float16 graph (%d nodes float16, %d kept float32, %d casts)", counts["float16"],
                 counts["float32"], counts["Cast"])
        _set_meta(model, dtype="float16")
    path = out / MODEL_FILE
    if quantize:
        float_path = out / ".float32.onnx"
        save(model, float_path)
        del model
        quantize_int8(float_path, path)
        import onnx

        model = onnx.load(str(path))
        _set_meta(model, dtype="int8")
        for leftover in [*out.glob(".float32.onnx*"), path, out / DATA_FILE]:
            if leftover.exists():
                leftover.unlink()
    if ckpt.head in DEFAULTED_INPUTS:
        _default_inputs(model, DEFAULTED_INPUTS[ckpt.head])
    return save(model, path)


def _default_inputs(model, names) -> None:
    """Give the graph inputs ``names`` a default: an int64 [1, 1] zeros initializer of the same name.

    ONNX Runtime then lists them under ``get_overridable_initializers()`` instead of
    ``get_inputs()``: a caller may omit them (zeros, broadcast over [B, S] where forward.py adds
    the token-type embeddings to the word embeddings) or feed them. Added last, after fusion and
    quantization, so no pass takes the default for a constant.
    """
    from onnx import numpy_helper

    for name in names:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1), np.int64), name))


FORMAT = ArtifactFormat(
    name="onnx",
    extra="onnx",
    detect=detect,
    export=export,
    open_runner=open_runner,
    inspect=inspect,
    heads=tuple(HEADS),
    options=OPTIONS,
)
