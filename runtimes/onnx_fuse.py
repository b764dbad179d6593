"""Rewrite the plain exported graph into ONNX Runtime's fused CPU kernels, in place.

The plain graph (runtimes/ops_onnx.py running runtimes/forward.py) spells every formula
out. These rewrites recognise exactly the shapes forward.py emits and replace each with
one kernel of equal math:

    ReduceMax, Sub, Exp, ReduceSum, Div                       -> Softmax (axis -1)
    q/k/v dense + head split, QK^T / sqrt(d) + bias, Softmax,
      context matmul + head merge                             -> com.microsoft Attention
    LayerNorm of (dense + residual)                           -> com.microsoft SkipLayerNormalization
    other LayerNorms                                          -> LayerNormalization (opset 17)
    0.5*x*(1+erf(x/sqrt 2)) of (dense)                        -> com.microsoft BiasGelu (exact erf)
    other exact GELUs                                         -> com.microsoft Gelu (exact erf)

Then, when the output reads token 0 only (sequence classification, multiple choice with
summary "first"), the token-wise tail of the last layer runs on token 0 alone
(_first_token_only). Never FastGelu: it is the tanh approximation (4.7e-4 off per
activation, formats.md section 7). Attention keeps forward.py's additive mask exactly: the raw mask with
``mask_filter_value`` = finfo(float32).min (ONNX Runtime's default fill is -10000, which
differs on fully padded rows), and for causal-lm forward's own [B, 1, S, S] bias.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import onnx
from electra_bridge.schemas import ElectraConfig
from onnx import helper, numpy_helper

MS = "com.microsoft"
#: the kernels fuse() produces (its return value counts them)
FUSED = ("Attention", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu", "Softmax")


class _Index:
    """Producer/consumer maps and constant lookup over a graph's nodes."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in graph.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in graph.output}

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op_type else None

    def const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def scalar(self, name: str) -> float | None:
        v = self.const(name)
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def is_weight(self, name: str) -> bool:
        return name in self.inits

    def private(self, name: str, users: int = 1) -> bool:
        """Only ``users`` nodes read ``name`` and it is not a graph output (safe to fuse away)."""
        return len(self.consumers[name]) == users and name not in self.outputs

    def axes(self, node: onnx.NodeProto) -> list[int] | None:
        for a in node.attribute:
            if a.name == "axes":
                return list(a.ints)
        return [int(x) for x in self.const(node.input[1])] if len(node.input) > 1 else None

    def attr(self, node: onnx.NodeProto, name: str):
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The other input of a binary node, given one of them."""
    a, b = node.input
    return b if a == name else a if b == name else None


def _near(value: float | None, target: float, tol: float = 1e-6) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


# ---- matchers: each returns the replacement nodes for the pattern ending at ``node``, or None ------

def _softmax(ix: _Index, node) -> list | None:
    if node.op_type != "Div":
        return None
    e_name, s_name = node.input
    s, e = ix.op(s_name, "ReduceSum"), ix.op(e_name, "Exp")
    if s is None or e is None or s.input[0] != e_name or ix.axes(s) != [-1]:
        return None
    sh = ix.op(e.input[0], "Sub")
    mx = sh and ix.op(sh.input[1], "ReduceMax")
    if mx is None or mx.input[0] != sh.input[0] or ix.axes(mx) != [-1]:
        return None
    return [helper.make_node("Softmax", [sh.input[0]], [node.output[0]], name=f"{node.name}_softmax", axis=-1)]


def _dense(ix: _Index, name: str):
    """``name`` = Add(MatMul(x, W), b) with weights W [in, out] and b [out] -> (x, W, b, matmul output)."""
    add = ix.op(name, "Add")
    if add is None:
        return None
    for mm_out in add.input:
        mm, bias = ix.op(mm_out, "MatMul"), _other(add, mm_out)
        if mm is not None and ix.is_weight(bias) and ix.is_weight(mm.input[1]):
            return mm.input[0], mm.input[1], bias, mm_out
    return None


def _heads_split(ix: _Index, name: str, num_heads: int, head_dim: int):
    """``name`` = Transpose(Reshape(dense, [B, S, N, d]), 0 2 1 3) -> dense match."""
    tr = ix.op(name, "Transpose")
    rs = tr and ix.op(tr.input[0], "Reshape")
    if rs is None or ix.attr(tr, "perm") != [0, 2, 1, 3]:
        return None
    shape = ix.op(rs.input[1], "Concat")
    if shape is None or len(shape.input) != 4 or [ix.scalar(s) for s in shape.input[2:]] != [num_heads, head_dim]:
        return None
    return _dense(ix, rs.input[0])


def _attention(ix: _Index, node, cfg: ElectraConfig, state: dict) -> list | None:
    if node.op_type != "MatMul":
        return None
    n_heads, d = cfg.num_attention_heads, cfg.head_dim
    probs = ix.op(node.input[0], "Softmax")
    scored = probs and ix.op(probs.input[0], "Add")
    if scored is None or ix.attr(probs, "axis") not in (-1, 3):
        return None
    scaled_name = next((i for i in scored.input if ix.op(i, "Div")), None)
    if scaled_name is None:
        return None
    bias = _other(scored, scaled_name)
    scaled = ix.op(scaled_name, "Div")
    divisor = ix.scalar(scaled.input[1])
    qk = ix.op(scaled.input[0], "MatMul")
    kt = qk and ix.op(qk.input[1], "Transpose")
    if divisor is None or kt is None or ix.attr(kt, "perm") != [0, 1, 3, 2]:
        return None
    q, k, v = (_heads_split(ix, n, n_heads, d) for n in (qk.input[0], kt.input[0], node.input[1]))
    if not (q and k and v) or len({q[0], k[0], v[0]}) != 1:
        return None
    merge = ix.consumers[node.output[0]]
    if len(merge) != 1 or merge[0].op_type != "Transpose" or ix.attr(merge[0], "perm") != [0, 2, 1, 3]:
        return None
    reshape = ix.consumers[merge[0].output[0]]
    if len(reshape) != 1 or reshape[0].op_type != "Reshape":
        return None
    attrs = {"num_heads": n_heads}
    if not _near(divisor, math.sqrt(d)):
        attrs["scale"] = 1.0 / divisor
    mask_index, nodes = _mask_index(ix, bias, state)
    if mask_index is None:
        return None
    causal = state["causal"][bias]
    if causal and not state["quantizable"]:
        full = f"{bias}/expanded"                                          # exact, fully padded rows too
        mask_inputs = ["", "", full]                                        # (mask_index, past, attention_bias)
        nodes = [] if bias in state["expanded"] else _expand_bias(bias, full)
        state["expanded"].add(bias)
    else:
        attrs["mask_filter_value"] = float(np.finfo(np.float32).min)      # forward.py's fill, not ORT's -10000
        attrs.update({"unidirectional": 1} if causal else {})
        mask_inputs = [mask_index]
    x, out = q[0], reshape[0].output[0]
    state["drop"].update({merge[0].name, reshape[0].name})                    # Attention writes ``out`` itself
    weight = np.concatenate([ix.const(m[1]) for m in (q, k, v)], axis=1)      # [H, 3H]: q | k | v
    qkv_bias = np.concatenate([ix.const(m[2]) for m in (q, k, v)])            # [3H]
    # name the packed tensors after the layer: encoder.layer.{i}.attention.self.qkv.{weight,bias}
    suffix = ".query.weight.T"
    prefix = q[1][:-len(suffix)] if q[1].endswith(suffix) else f"attention_{len(state['new_inits']) // 2}"
    w_name, b_name = f"{prefix}.qkv.weight", f"{prefix}.qkv.bias"                   # [H, 3H] ([in, out]), [3H]
    state["new_inits"] += [numpy_helper.from_array(weight.astype(np.float32), w_name),
                           numpy_helper.from_array(qkv_bias.astype(np.float32), b_name)]
    return [*nodes, helper.make_node("Attention", [x, w_name, b_name, *mask_inputs], [out],
                                     name=f"{prefix}.attention", domain=MS, **attrs)]


def _expand_bias(bias: str, full: str) -> list:
    """Nodes computing ``full`` = ``bias`` [B, 1, 1|S, S] expanded to [B, 1, S, S] (Attention wants S rows)."""
    return [
        helper.make_node("Shape", [bias], [f"{bias}/shape_b1"], start=0, end=2, name=f"{bias}/shape_b1_node"),
        helper.make_node("Shape", [bias], [f"{bias}/shape_s"], start=3, end=4, name=f"{bias}/shape_s_node"),
        helper.make_node("Concat", [f"{bias}/shape_b1", f"{bias}/shape_s", f"{bias}/shape_s"], [f"{full}/shape"],
                         axis=0, name=f"{full}/shape_node"),
        helper.make_node("Expand", [bias, f"{full}/shape"], [full], name=f"{full}_node"),
    ]


def _mask_index(ix: _Index, bias: str, state: dict):
    """The int32 [B, S] 0/1 mask behind the additive ``bias``, and the nodes making it.

    Walks up from the bias to the Cast of the integer attention mask
    (forward.attention_bias); a LessOrEqual on the way marks the causal mask
    (state["causal"][bias]).
    """
    if bias in state["index"]:
        return state["index"][bias], []
    seen, todo, cast, causal = set(), [bias], None, False
    while todo:
        node = ix.producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        causal |= node.op_type == "LessOrEqual"
        if node.op_type == "Cast" and cast is None and not ix.op(node.input[0], "LessOrEqual"):
            cast = node
            continue
        todo += list(node.input)
    if cast is None:
        return None, []
    index = f"{cast.input[0]}/int32"
    state["index"][bias], state["causal"][bias] = index, causal
    return index, [helper.make_node("Cast", [cast.input[0]], [index], name=f"{index}_cast", to=onnx.TensorProto.INT32)]


def _layer_norm(ix: _Index, node) -> list | None:
    """Add(Mul(Div(x - mean, sqrt(var + eps)), gamma), beta) as forward.layer_norm emits it."""
    if node.op_type != "Add":
        return None
    scaled_name = next((i for i in node.input if ix.op(i, "Mul")), None)
    beta = scaled_name and _other(node, scaled_name)
    if scaled_name is None or not ix.is_weight(beta):
        return None
    scaled = ix.op(scaled_name, "Mul")
    div_name = next((i for i in scaled.input if ix.op(i, "Div")), None)
    gamma = div_name and _other(scaled, div_name)
    if div_name is None or not ix.is_weight(gamma):
        return None
    div = ix.op(div_name, "Div")
    centered, sq = ix.op(div.input[0], "Sub"), ix.op(div.input[1], "Sqrt")
    plus_eps = sq and ix.op(sq.input[0], "Add")
    if centered is None or plus_eps is None:
        return None
    var = next((ix.op(i, "ReduceMean") for i in plus_eps.input if ix.op(i, "ReduceMean")), None)
    eps = var and ix.scalar(_other(plus_eps, var.output[0]))
    square = var and ix.op(var.input[0], "Mul")
    mean = ix.op(centered.input[1], "ReduceMean")
    x = centered.input[0]
    if (eps is None or square is None or list(square.input) != [div.input[0]] * 2 or mean is None
            or mean.input[0] != x or ix.axes(mean) != [-1] or ix.axes(var) != [-1]):
        return None
    out, name = node.output[0], f"{node.name}_layernorm"
    residual = ix.op(x, "Add")
    if residual is not None and ix.private(x, users=2):                     # x = dense + skip
        for dense_out in residual.input:
            dense = _dense(ix, dense_out)
            if dense is not None and ix.private(dense_out):
                skip = _other(residual, dense_out)
                return [helper.make_node("SkipLayerNormalization", [dense[3], skip, gamma, beta, dense[2]], [out],
                                         name=name, domain=MS, epsilon=eps)]
    return [helper.make_node("LayerNormalization", [x, gamma, beta], [out], name=name, axis=-1, epsilon=eps)]


def _gelu(ix: _Index, node) -> list | None:
    """Mul(Mul(0.5, x), Add(1, Erf(Mul(x, 1/sqrt 2)))) as forward's exact "gelu" emits it."""
    if node.op_type != "Mul":
        return None
    for half_name in node.input:
        half, plus = ix.op(half_name, "Mul"), ix.op(_other(node, half_name), "Add")
        if half is None or plus is None:
            continue
        erf = next((ix.op(i, "Erf") for i in plus.input if ix.op(i, "Erf")), None)
        if erf is None or not _near(ix.scalar(_other(plus, erf.output[0])), 1.0):
            continue
        inner = ix.op(erf.input[0], "Mul")
        x = next((i for i in half.input if _near(ix.scalar(_other(half, i)), 0.5)), None)
        if (inner is None or x is None or x not in inner.input
                or not _near(ix.scalar(_other(inner, x)), 1 / math.sqrt(2))):
            continue
        dense = _dense(ix, x)
        if dense is not None and ix.private(x, users=2) and len(ix.const(dense[2]).shape) == 1:
            return [helper.make_node("BiasGelu", [dense[3], dense[2]], [node.output[0]], name=f"{node.name}_biasgelu",
                                     domain=MS)]
        return [helper.make_node("Gelu", [x], [node.output[0]], name=f"{node.name}_gelu", domain=MS)]
    return None


# ---- driver --------------------------------------------------------------------------------------

#: kernels that act on each token independently (weights must be initializers, see _token_wise)
TOKEN_WISE = {"MatMul", "Add", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu"}


def _token_wise(ix: _Index, node) -> bool:
    if node.op_type not in TOKEN_WISE:
        return False
    if node.op_type in ("MatMul", "Add"):                         # x @ W or x + b with W, b weights
        return ix.is_weight(node.input[1]) and not ix.is_weight(node.input[0])
    return True


def _reads_no_token_axis(ix: _Index, node) -> bool:
    """A Shape node reading dimensions other than axis 1 (the batch or hidden size)."""
    if node.op_type != "Shape":
        return False
    start, end = ix.attr(node, "start") or 0, ix.attr(node, "end")
    return end is not None and (end <= 1 or start >= 2) and start >= 0


def _first_token_only(model: onnx.ModelProto) -> int:
    """When the output reads only token 0 (``h[:, 0:1, :]``: sequence classification, multiple
    choice with summary "first"), compute the token-wise tail of the last layer (attention
    output dense, LayerNorms, feed-forward) for token 0 alone instead of all S tokens.

    The tail is the set of token-wise nodes all of whose readers are in the tail or are the
    slice; every activation entering it from outside (the Attention output, the residual)
    is sliced to token 0 first. Same numbers per token, ~1/16 less work for a 12-layer model.
    Returns the number of slices moved.
    """
    graph = model.graph
    ix = _Index(graph)
    moved = 0
    for sl in [n for n in graph.node if n.op_type == "Slice" and len(n.input) >= 4]:
        if [ix.const(i).tolist() if ix.const(i) is not None else None for i in sl.input[1:4]] != [[0], [1], [1]]:
            continue
        tail: set[str] = set()
        for node in reversed(list(graph.node)):
            readers = [c for o in node.output for c in ix.consumers[o]]
            if (_token_wise(ix, node) and readers and not set(node.output) & ix.outputs
                    and all(c.name in tail or c.name == sl.name or _reads_no_token_axis(ix, c) for c in readers)):
                tail.add(node.name)
        if not tail or ix.producer.get(sl.input[0]) is None or ix.producer[sl.input[0]].name not in tail:
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
                        graph.node.append(helper.make_node("Slice", [name, *sl.input[1:4]], [sliced[name]],
                                                           name=f"{name}/first_token_node"))
                    node.input[k] = sliced[name]
        moved += len(sliced)
        nodes = _toposort(list(graph.node), graph)
        del graph.node[:]
        graph.node.extend(nodes)
        ix = _Index(graph)
    return moved


def _rewrite(model: onnx.ModelProto, matcher, state: dict) -> None:
    """Replace every match (found on the graph as it was before this pass), then drop dead nodes.

    A matcher returns the nodes replacing the one it matched at (they write its output) or
    None; it may add initializers to state["new_inits"] and name nodes to drop in state["drop"].
    """
    graph = model.graph
    ix = _Index(graph)
    nodes = []
    for node in graph.node:
        replacement = matcher(ix, node)
        nodes += [node] if replacement is None else replacement
    graph.initializer.extend(state["new_inits"])
    state["new_inits"] = []
    nodes = [n for n in nodes if n.name not in state["drop"]]
    del graph.node[:]
    graph.node.extend(_toposort(nodes, graph))
    _prune(model)


def _toposort(nodes: list, graph: onnx.GraphProto) -> list:
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


def _prune(model: onnx.ModelProto) -> None:
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
    """Fuse ``model`` (a plain graph from converters/onnx_export.build_model) in place.

    Attention gets the raw 0/1 mask (``mask_index`` [B, S] int32) with ``mask_filter_value``
    = finfo(float32).min, which is forward.py's additive mask exactly (every row, fully
    padded ones included) and ~10% faster than a bias input. The causal mask goes in as
    forward's own [B, 1, S, S] bias (``attention_bias``), unless ``quantizable``: QAttention
    has no attention_bias input (the int8 quantizer silently drops it -- measured: padding
    then leaks into the logits), so quantizable graphs use ``unidirectional=1`` instead,
    equal except on fully padded rows (where the causal and padding fills add to -inf).

    Returns how many of each fused kernel were created. Softmax goes first (Attention
    matches on it), LayerNorm before GELU (BiasGelu and SkipLayerNorm share no nodes).
    """
    state = {"expanded": set(), "new_inits": [], "drop": set(), "quantizable": quantizable, "index": {}, "causal": {}}
    _rewrite(model, _softmax, state)
    _rewrite(model, lambda ix, node: _attention(ix, node, cfg, state), state)
    _rewrite(model, _layer_norm, state)
    _rewrite(model, _gelu, state)
    _first_token_only(model)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    ops = Counter(n.op_type for n in model.graph.node)
    return {name: ops[name] for name in FUSED if ops[name]}
