"""float16 ONNX graphs: a float32 graph (plain or fused by runtimes/onnx_fuse.py) turned into one
whose weights and dense/GELU/residual arithmetic are float16 while the kernels float16 would
overflow in stay float32 (see ``FLOAT32_KERNELS``); inputs stay int64, outputs float32.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from electra_bridge.schemas import ElectraConfig
from onnx import helper, numpy_helper

from .onnx_fuse import patterns, prune, toposort
from .ops_onnx import Index


#: kernels kept in float32 in a float16 graph: LayerNorm statistics (a sum of squares passes 65504
#: once activations pass 256), softmax (exp and its sum) and the attention kernel (softmax and the
#: additive mask inside)
FLOAT32_KERNELS = {"LayerNormalization", "SkipLayerNormalization", "Softmax", "Attention"}
#: ops whose output is never a float tensor whatever their inputs
_NOT_FLOAT = {"Shape", "Range", "LessOrEqual", "Size"}
_F32, _F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _float_tensors(graph: onnx.GraphProto) -> set[str]:
    """The graph's float tensors: float initializers, and outputs of nodes that compute on floats."""
    found = {t.name for t in graph.initializer if t.data_type == _F32}
    for n in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Cast":
            is_float = attrs.get("to") == _F32
        elif n.op_type in _NOT_FLOAT:
            is_float = False
        else:
            is_float = any(i in found for i in n.input)
        if is_float:
            found.update(n.output)
    return found


def _float32_nodes(model: onnx.ModelProto, cfg: ElectraConfig) -> set[str]:
    """Names of the nodes that stay float32: FLOAT32_KERNELS, and in a plain graph the LayerNorm and
    softmax blocks and the attention mask arithmetic (forward.attention_bias and the ``scores + bias``
    add), found by the same patterns fuse() uses."""
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    p = patterns(cfg, opset)
    ix = Index(graph)
    keep = {n.name for n in graph.node if n.op_type in FLOAT32_KERNELS}
    bias_outputs: set[str] = set()
    for node in graph.node:
        for key in ("layer_norm", "softmax", "padding_bias", "causal_bias"):
            pattern = p[key]
            found = pattern.match(ix, node.output[0]) if node.op_type == pattern.op_type else None
            if found:
                keep |= set(pattern.nodes(ix, found))
                if key.endswith("bias"):
                    bias_outputs.add(node.output[0])
    # what reads the mask bias: Expand (the causal [B,1,S,S] copy) and the add onto the scores
    todo = list(bias_outputs)
    while todo:
        for c in ix.consumers[todo.pop()]:
            if c.name not in keep and c.op_type in ("Expand", "Add", "Reshape", "Unsqueeze"):
                keep.add(c.name)
                if c.op_type != "Add":
                    todo.extend(c.output)
    return keep


def to_float16(model: onnx.ModelProto, cfg: ElectraConfig) -> dict[str, int]:
    """Make a float32 graph (plain or fused) compute in float16, in place, but for the nodes of
    ``_float32_nodes``: float initializers read only by float16 nodes become float16, Casts go
    in where a float tensor crosses between the two regions, the graph outputs stay float32 (a
    final Cast) and the int64 inputs are unchanged. Returns {"float16": nodes, "float32": nodes,
    "Cast": casts added}."""
    graph = model.graph
    floats = _float_tensors(graph)
    keep = _float32_nodes(model, cfg)
    inits = {t.name: t for t in graph.initializer}
    ix = Index(graph)
    half_init = {name for name, t in inits.items() if t.data_type == _F32 and ix.consumers[name]
                 and all(c.name not in keep for c in ix.consumers[name])}
    for name in half_init:
        arr = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float16), name))
    # the dtype each float tensor has after the rewrite: an initializer's, else its producer region's
    typed = {name: (_F16 if name in half_init else _F32) for name in inits if name in floats}
    nodes, casts = [], {}
    outputs = {o.name for o in graph.output}

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            out = f"{name}/{'fp16' if to == _F16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=to))
            casts[(name, to)] = out
        return casts[(name, to)]

    for n in graph.node:
        # an Identity copy (a graph output named twice) keeps its source's dtype: no round trip via float16
        copy32 = n.op_type == "Identity" and typed.get(n.input[0]) == _F32
        region = _F32 if n.name in keep or copy32 else _F16
        for k, name in enumerate(n.input):
            if name in typed and typed[name] != region:
                n.input[k] = cast(name, region)
        if n.op_type == "Cast" and any(a.name == "to" and a.i == _F32 for a in n.attribute) and region == _F16:
            for a in n.attribute:
                if a.name == "to":
                    a.i = _F16
        nodes.append(n)
        for k, name in enumerate(n.output):
            if name not in floats:
                continue
            typed[name] = region
            if name in outputs and region == _F16:                   # outputs stay float32
                inner = f"{name}/fp16"
                n.output[k] = inner
                typed[inner] = _F16
                nodes.append(helper.make_node("Cast", [inner], [name], name=f"{name}_output_cast", to=_F32))
                typed[name] = _F32
    del graph.node[:]
    graph.node.extend(toposort(nodes, graph))
    for vi in list(graph.value_info):
        graph.value_info.remove(vi)
    prune(model)
    ops = Counter(n.op_type for n in graph.node)
    return {"float16": len(graph.node) - len(keep) - len(casts), "float32": len(keep), "Cast": ops["Cast"]}
