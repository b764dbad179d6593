"""Rewrite the plain exported graph into ONNX Runtime's fused CPU kernels, in place.

The plain graph (runtimes/ops_onnx.py running runtimes/forward.py) spells every formula
out in standard ops. Each rewrite replaces one block of forward.py with one kernel of
equal math, and finds the block by its pattern: the subgraph forward.py's own function
emits over OnnxOps on symbolic inputs (runtimes/ops_onnx.py ``Pattern``), matched node for
node -- op type, attributes, wiring, constant values -- the way runtimes/torch_fuse.py
matches forward.py's blocks in torch.fx. Nothing here re-types LayerNorm, GELU, softmax
or attention, so an edit to forward.py either still matches (same math) or stops fusing
(slower, never different; tests/test_onnx_fuse.py counts the kernels):

    self-attention of forward.encoder_layer (everything
      the attention output dense reads)                  -> com.microsoft Attention
    forward.layer_norm(forward.linear(h) + skip)         -> com.microsoft SkipLayerNormalization
    other forward.layer_norm                             -> LayerNormalization (opset 17)
    ACTIVATIONS["gelu"](forward.linear(h))               -> com.microsoft BiasGelu (exact erf)
    other ACTIVATIONS["gelu"]                            -> com.microsoft Gelu (exact erf)
    forward.softmax outside attention                    -> Softmax (axis -1)

Why matching and not an OnnxOps subclass whose hooks emit the kernels directly: fuse()
takes a finished plain graph (the export builds one, then fuses it unless --plain), and
hooks would need forward.py to route layer_norm/gelu/attention through every ops
namespace; matching leaves forward.py and the plain graph untouched. Patterns are traced
with the graph's opset (reductions take axes as attribute or input) and the config (eps,
head count and size, hidden_act), so they are exactly what the export emitted.

Then, when the output reads token 0 only (forward._first_token: sequence classification,
multiple choice with summary "first"), the token-wise tail of the last layer runs on
token 0 alone (_first_token_only). Never FastGelu: it is the tanh approximation of GELU,
about 4.7e-4 off the exact erf form per activation. Attention keeps forward.py's additive
mask exactly: the raw mask with ``mask_filter_value`` = finfo(float32).min (ONNX Runtime's
default fill is -10000, which differs on fully padded rows), and for causal-lm forward's
own [B, 1, S, S] bias.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from electra_bridge.schemas import ElectraConfig
from onnx import helper, numpy_helper

from .forward import ACTIVATIONS, _first_token, attention_bias, encoder_layer, layer_norm, linear, softmax
from .ops_onnx import Index, Pattern

MS = "com.microsoft"
#: the kernels fuse() produces (its return value counts them)
FUSED = ("Attention", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu", "Softmax")
#: the layer whose self-attention is traced; its weight names are wildcards matching any layer's
LAYER = "encoder.layer.0"
SELF = f"{LAYER}.attention.self"


def patterns(cfg: ElectraConfig, opset: int) -> dict[str, Pattern]:
    """forward.py's blocks as patterns (see the module docstring); inputs are named, weights
    are ``dense.*`` / ``ln.*`` (and the traced layer's canonical names for attention)."""
    eps, gelu = cfg.layer_norm_eps, ACTIVATIONS["gelu"]
    layer = Pattern(lambda ops, p, x, bias: encoder_layer(x, p, 0, cfg, bias, ops), ("x", "bias"), opset)
    # the self-attention block: everything the attention output dense reads, back to x and bias
    out_dense = layer.reader(f"{LAYER}.attention.output.dense.weight.T")
    return {
        "attention": layer.at(next(i for i in out_dense.input if i not in layer.weights)),
        "skip_layer_norm": Pattern(lambda ops, p, h, skip: layer_norm(linear(h, p, "dense", ops) + skip, p, "ln",
                                                                       eps, ops), ("h", "skip"), opset),
        "layer_norm": Pattern(lambda ops, p, x: layer_norm(x, p, "ln", eps, ops), ("x",), opset),
        "bias_gelu": Pattern(lambda ops, p, h: gelu(linear(h, p, "dense", ops), ops), ("h",), opset),
        "gelu": Pattern(lambda ops, p, x: gelu(x, ops), ("x",), opset),
        "softmax": Pattern(lambda ops, p, x: softmax(x, ops), ("x",), opset),
        "padding_bias": Pattern(lambda ops, p, m: attention_bias(m, False, ops), ("mask",), opset),
        "causal_bias": Pattern(lambda ops, p, m: attention_bias(m, True, ops), ("mask",), opset),
        "first_token": Pattern(lambda ops, p, h: _first_token(h, ops), ("h",), opset),
    }


class _Fuser:
    """The passes of fuse(); each replacement returns the nodes writing the match's output, or None."""

    def __init__(self, model: onnx.ModelProto, cfg: ElectraConfig, quantizable: bool):
        self.model, self.cfg, self.quantizable = model, cfg, quantizable
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.p = patterns(cfg, opset)
        self.new_inits: list[onnx.TensorProto] = []
        self.masks: dict[str, tuple[str, bool] | None] = {}   # additive bias -> (raw 0/1 mask, causal)
        self.made: set[str] = set()                            # mask tensors already computed

    def run(self) -> None:
        p = self.p
        self.rewrite([(p["attention"], self.attention)])
        self.rewrite([(p["skip_layer_norm"], self.skip_layer_norm), (p["layer_norm"], self.layer_norm)])
        self.rewrite([(p["bias_gelu"], self.bias_gelu), (p["gelu"], self.gelu)])
        self.rewrite([(p["softmax"], self.softmax)])
        _first_token_only(self.model, p["first_token"])

    def rewrite(self, rules) -> None:
        """Replace every match (found on the graph as it was before this pass), then drop dead
        nodes. A match is taken only if no tensor inside it is read from outside it (nothing
        would be computed twice) and it shares no node with an earlier match."""
        graph = self.model.graph
        ix = Index(graph)
        taken: set[str] = set()
        nodes = []
        for node in graph.node:
            for pattern, replace in rules:
                found = pattern.match(ix, node.output[0]) if node.op_type == pattern.op_type else None
                inside = pattern.private_nodes(ix, found) if found else None
                replacement = replace(ix, found, node) if inside and not inside & taken else None
                if replacement is not None:
                    taken |= inside
                    nodes += replacement
                    break
            else:
                nodes.append(node)
        graph.initializer.extend(self.new_inits)
        self.new_inits = []
        del graph.node[:]
        graph.node.extend(toposort(nodes, graph))
        prune(self.model)

    # ---- replacements -------------------------------------------------------------------------
    def softmax(self, ix, m, node):
        return [helper.make_node("Softmax", [m["x"]], [node.output[0]], name=f"{node.name}_softmax", axis=-1)]

    def layer_norm(self, ix, m, node):
        return [helper.make_node("LayerNormalization", [m["x"], m["ln.weight"], m["ln.bias"]], [node.output[0]],
                                 name=f"{node.name}_layernorm", axis=-1, epsilon=self.cfg.layer_norm_eps)]

    def skip_layer_norm(self, ix, m, node):
        product = m[self.p["skip_layer_norm"].reader("dense.weight.T").output[0]]      # h @ W, before + b
        inputs = [product, m["skip"], m["ln.weight"], m["ln.bias"], m["dense.bias"]]
        return [helper.make_node("SkipLayerNormalization", inputs, [node.output[0]], name=f"{node.name}_layernorm",
                                 domain=MS, epsilon=self.cfg.layer_norm_eps)]

    def gelu(self, ix, m, node):
        return [helper.make_node("Gelu", [m["x"]], [node.output[0]], name=f"{node.name}_gelu", domain=MS)]

    def bias_gelu(self, ix, m, node):
        if ix.const(m["dense.bias"]).ndim != 1:
            return None
        product = m[self.p["bias_gelu"].reader("dense.weight.T").output[0]]
        return [helper.make_node("BiasGelu", [product, m["dense.bias"]], [node.output[0]],
                                 name=f"{node.name}_biasgelu", domain=MS)]

    def attention(self, ix, m, node):
        """com.microsoft Attention over packed q|k|v weights (see fuse() for the mask)."""
        mask = self.mask(ix, m["bias"])
        if mask is None:
            return None
        (raw, causal), bias = mask, m["bias"]
        attrs, nodes = {"num_heads": self.cfg.num_attention_heads}, []
        if causal and not self.quantizable:
            full = f"{bias}/expanded"                                      # exact, fully padded rows too
            mask_inputs = ["", "", full]                                    # (mask_index, past, attention_bias)
            nodes = [] if full in self.made else _expand_bias(bias, full)
            self.made.add(full)
        else:
            attrs["mask_filter_value"] = float(np.finfo(np.float32).min)  # forward.py's fill, not ORT's -10000
            attrs.update({"unidirectional": 1} if causal else {})
            index = f"{raw}/int32"
            mask_inputs = [index]
            if index not in self.made:
                nodes = [helper.make_node("Cast", [raw], [index], name=f"{index}_cast", to=onnx.TensorProto.INT32)]
                self.made.add(index)
        weights = [m[f"{SELF}.{n}.weight.T"] for n in ("query", "key", "value")]
        weight = np.concatenate([ix.const(w) for w in weights], axis=1)               # [H, 3H]: q | k | v
        qkv_bias = np.concatenate([ix.const(m[f"{SELF}.{n}.bias"]) for n in ("query", "key", "value")])
        # name the packed tensors after the layer: encoder.layer.{i}.attention.self.qkv.{weight,bias}
        suffix = ".query.weight.T"
        prefix = weights[0][:-len(suffix)] if weights[0].endswith(suffix) else f"attention_{node.name}"
        w_name, b_name = f"{prefix}.qkv.weight", f"{prefix}.qkv.bias"                 # [H, 3H] ([in, out]), [3H]
        self.new_inits += [numpy_helper.from_array(weight.astype(np.float32), w_name),
                           numpy_helper.from_array(qkv_bias.astype(np.float32), b_name)]
        return [*nodes, helper.make_node("Attention", [m["x"], w_name, b_name, *mask_inputs], [node.output[0]],
                                         name=f"{prefix}.attention", domain=MS, **attrs)]

    def mask(self, ix, bias: str) -> tuple[str, bool] | None:
        """(raw 0/1 mask, causal) behind the additive ``bias``: which forward.attention_bias made it."""
        if bias not in self.masks:
            padding, causal = self.p["padding_bias"].match(ix, bias), self.p["causal_bias"].match(ix, bias)
            self.masks[bias] = (padding["mask"], False) if padding else (causal["mask"], True) if causal else None
        return self.masks[bias]


def _expand_bias(bias: str, full: str) -> list:
    """Nodes computing ``full`` = ``bias`` [B, 1, 1|S, S] expanded to [B, 1, S, S] (Attention wants S rows)."""
    return [
        helper.make_node("Shape", [bias], [f"{bias}/shape_b1"], start=0, end=2, name=f"{bias}/shape_b1_node"),
        helper.make_node("Shape", [bias], [f"{bias}/shape_s"], start=3, end=4, name=f"{bias}/shape_s_node"),
        helper.make_node("Concat", [f"{bias}/shape_b1", f"{bias}/shape_s", f"{bias}/shape_s"], [f"{full}/shape"],
                         axis=0, name=f"{full}/shape_node"),
        helper.make_node("Expand", [bias, f"{full}/shape"], [full], name=f"{full}_node"),
    ]


# ---- token 0 only --------------------------------------------------------------------------------

#: kernels that act on each token independently (weights must be initializers, see _token_wise)
TOKEN_WISE = {"MatMul", "Add", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu"}


def _token_wise(ix: Index, node) -> bool:
    if node.op_type not in TOKEN_WISE:
        return False
    if node.op_type in ("MatMul", "Add"):                         # x @ W or x + b with W, b weights
        return ix.is_weight(node.input[1]) and not ix.is_weight(node.input[0])
    return True


def _first_token_only(model: onnx.ModelProto, first_token: Pattern) -> int:
    """When the output reads only token 0 (a match of forward._first_token: sequence
    classification, multiple choice with summary "first"), compute the token-wise tail of
    the last layer (attention output dense, LayerNorms, feed-forward) for token 0 alone
    instead of all S tokens.

    The tail is the set of token-wise nodes all of whose readers are in the tail or in the
    match; every activation entering it from outside (the Attention output, the residual)
    goes through a copy of the match's Slice first (the match itself then slices a
    one-token tensor, a no-op). Same numbers per token, ~1/16 less work for a 12-layer
    model. Returns the number of slices added.
    """
    graph = model.graph
    ix = Index(graph)
    moved = 0
    for anchor in [n.output[0] for n in graph.node if n.op_type == first_token.op_type]:
        found = first_token.match(ix, anchor)
        matched = first_token.nodes(ix, found) if found else {}
        sl = next((n for n in matched.values() if n.op_type == "Slice"), None)
        if sl is None:
            continue
        tail: set[str] = set()
        for node in reversed(list(graph.node)):
            readers = [c for o in node.output for c in ix.consumers[o]]
            if (_token_wise(ix, node) and readers and not set(node.output) & ix.outputs
                    and all(c.name in tail or c.name in matched for c in readers)):
                tail.add(node.name)
        if ix.producer.get(found["h"]) is None or ix.producer[found["h"]].name not in tail:
            continue
        produced = {o for n in graph.node if n.name in tail for o in n.output}
        sliced: dict[str, str] = {}
        for node in graph.node:
            if node.name not in tail:
                continue
            for k, name in enumerate(node.input):
                if name and name not in produced and not ix.is_weight(name):
                    if name not in sliced:
                        sliced[name] = f"{name}/first_token"
                        graph.node.append(helper.make_node("Slice", [name, *sl.input[1:]], [sliced[name]],
                                                           name=f"{name}/first_token_node"))
                    node.input[k] = sliced[name]
        moved += len(sliced)
        nodes = toposort(list(graph.node), graph)
        del graph.node[:]
        graph.node.extend(nodes)
        ix = Index(graph)
    return moved


# ---- graph plumbing ------------------------------------------------------------------------------

def toposort(nodes: list, graph: onnx.GraphProto) -> list:
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    waiting, order = list(nodes), []
    while waiting:
        rest = [n for n in waiting if not all(i in ready for i in n.input)]
        done = [n for n in waiting if all(i in ready for i in n.input)]
        if not done:
            raise ValueError("fusion left a cycle or an undefined tensor: " + ", ".join(n.name for n in rest[:5]))
        for n in done:
            ready.update(n.output)
        order += done
        waiting = rest
    return order


def prune(model: onnx.ModelProto) -> None:
    """Drop nodes no output depends on, then initializers nothing reads."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for n in reversed(graph.node):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(n.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    unused = [t for t in graph.initializer if t.name not in needed]
    for t in unused:
        graph.initializer.remove(t)


def fuse(model: onnx.ModelProto, cfg: ElectraConfig, *, quantizable: bool = False) -> dict[str, int]:
    """Fuse ``model`` (a plain graph from converters/formats/onnx.py build_model) in place.

    Attention gets the raw 0/1 mask (``mask_index`` [B, S] int32) with ``mask_filter_value``
    = finfo(float32).min, which is forward.py's additive mask exactly (every row, fully
    padded ones included) and ~10% faster than a bias input. The causal mask goes in as
    forward's own [B, 1, S, S] bias (``attention_bias``), unless ``quantizable``: QAttention
    has no attention_bias input (the int8 quantizer silently drops it -- measured: padding
    then leaks into the logits), so quantizable graphs use ``unidirectional=1`` instead,
    equal except on fully padded rows (where the causal and padding fills add to -inf).

    Returns how many of each fused kernel the graph holds. Attention goes first (its
    pattern holds forward's softmax and the q/k/v dense layers), residual LayerNorms before
    plain ones, BiasGelu before Gelu.
    """
    _Fuser(model, cfg, quantizable).run()
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    ops = Counter(n.op_type for n in model.graph.node)
    return {name: ops[name] for name in FUSED if ops[name]}
