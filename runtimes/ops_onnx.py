"""Symbolic ONNX ops for runtimes/forward.py: running ``forward`` once emits the graph.

Values are ``Sym`` handles naming ONNX graph tensors; python operators (+ - * / unary -,
slicing ``h[:, 0:1, :]``) add nodes, python floats become float32 scalar constants, and
``ops.shape(x)[i]`` is an int64 [1] tensor that ``reshape`` concatenates with python ints.
No math lives here: every formula is forward.py's, so the exported graph cannot drift from
the reference. Dtype contract: float tensors are float32, ids and shape pieces int64.

    builder = GraphBuilder(opset=17)
    ops = OnnxOps(builder)
    params = {name: ops.param(name, array) for name, array in tensors.items()}
    result = forward(params, cfg, head, {"input_ids": builder.input(...), ...}, ops)

``GraphBuilder.model`` then names the outputs, folds transposes of weights into
transposed initializers named ``<canonical name>.T`` (layout [in, out], so a dense layer
is a plain MatMul + Add as ONNX Runtime's kernels want) and returns an
``onnx.ModelProto``. Initializers keep canonical names; constants are named ``/const_*``.

``Pattern(fn, inputs, opset)`` runs a block of forward.py the same way on symbolic inputs
and keeps the subgraph it emits; ``Pattern.match`` finds that subgraph in a built graph
(read through ``Index``). runtimes/onnx_fuse.py finds the blocks it fuses this way, so the
fused graph has no second spelling of the math either. Needs the ``onnx`` package.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .forward import BaseOps

INT64_MAX = np.iinfo(np.int64).max
#: IR version written: ONNX Runtime >= 1.18 loads it (the onnx package's newest IR may be too new)
IR_VERSION = 10
FLOAT = np.dtype(np.float32)


class GraphBuilder:
    """Collects nodes, initializers and inputs; names every intermediate tensor uniquely."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self._ids = itertools.count()
        self._consts: dict[tuple, str] = {}

    # ---- primitives -------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        return f"/{hint}_{next(self._ids)}"

    def node(self, op: str, inputs: Sequence[str], *, domain: str = "", **attrs) -> str:
        out = self.fresh(op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out[1:], domain=domain or None, **attrs))
        return out

    def const(self, value, dtype) -> str:
        """A constant initializer, shared between equal constants."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"/const_{len(self._consts)}"
            self.initializers[name] = array
            self._consts[key] = name
        return self._consts[key]

    @property
    def constants(self) -> set[str]:
        """Names of the ``const`` initializers (the others are weights)."""
        return set(self._consts.values())

    def initializer(self, name: str, array: np.ndarray) -> str:
        if name in self.initializers:
            raise ValueError(f"initializer {name!r} defined twice")
        self.initializers[name] = np.ascontiguousarray(array)
        return name

    def input(self, name: str, dims: Sequence[str | int]) -> Sym:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(dims)))
        return Sym(self, name)

    # ---- finishing ----------------------------------------------------------------------
    def _rename(self, old: str, new: str) -> None:
        for n in self.nodes:
            for seq in (n.input, n.output):
                for i, name in enumerate(seq):
                    if name == old:
                        seq[i] = new

    def _fold_weight_transposes(self) -> None:
        """Transpose(initializer) used only there -> a transposed initializer (no runtime op).

        A transposed weight that is also read untransposed (the MLM decoder tied to the
        word embeddings) keeps its Transpose node: ONNX Runtime folds it once at load,
        and the file stores the table once.
        """
        uses: dict[str, int] = {}
        for n in self.nodes:
            for name in n.input:
                uses[name] = uses.get(name, 0) + 1
        kept = []
        for n in self.nodes:
            src = n.input[0] if n.input else ""
            if n.op_type == "Transpose" and src in self.initializers and uses[src] == 1 and not src.startswith("/"):
                perm = list(helper.get_attribute_value(n.attribute[0]))
                folded = f"{src}.T"
                self.initializers[folded] = np.ascontiguousarray(np.transpose(self.initializers.pop(src), perm))
                self._rename(n.output[0], folded)
                continue
            kept.append(n)
        self.nodes = kept

    def model(self, outputs: Mapping[str, tuple[Sym, Sequence[str | int]]], *,
              metadata: Mapping[str, str] = (), graph_name: str = "electra") -> onnx.ModelProto:
        """Name ``outputs`` (output name -> (value, dims)), fold weight transposes, build the model.

        A value named twice (``base``'s ``last_hidden_state`` is also its last hidden state)
        keeps the first name; the later outputs are Identity copies of it.
        """
        value_infos, named = [], {}
        for name, (value, dims) in outputs.items():
            producer = next((n for n in self.nodes if value.name in n.output), None)
            if value.name in named:                   # already an output: copy that one out
                self.nodes.append(helper.make_node("Identity", [named[value.name]], [name], name=f"{name}_identity"))
            elif producer is None:                    # an input or initializer: copy it out
                self.nodes.append(helper.make_node("Identity", [value.name], [name], name=f"{name}_identity"))
            else:
                self._rename(value.name, name)
                named[value.name] = name
            value_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims)))
        self._fold_weight_transposes()
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, value_infos,
                                  [numpy_helper.from_array(a, n) for n, a in self.initializers.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="electra-bridge")
        model.ir_version = IR_VERSION
        helper.set_model_props(model, dict(metadata))
        return model


class Sym:
    """A graph tensor with python operators; float operands become float32 constants."""

    __slots__ = ("g", "name")
    __array_priority__ = 1000   # numpy scalars defer to our reflected operators

    def __init__(self, g: GraphBuilder, name: str):
        self.g, self.name = g, name

    def _operand(self, other) -> str:
        if isinstance(other, Sym):
            return other.name
        return self.g.const(other, FLOAT)

    def _binary(self, op: str, other, reflected: bool = False) -> Sym:
        a, b = self.name, self._operand(other)
        return Sym(self.g, self.g.node(op, [b, a] if reflected else [a, b]))

    def __add__(self, o): return self._binary("Add", o)
    def __radd__(self, o): return self._binary("Add", o, True)
    def __sub__(self, o): return self._binary("Sub", o)
    def __rsub__(self, o): return self._binary("Sub", o, True)
    def __mul__(self, o): return self._binary("Mul", o)
    def __rmul__(self, o): return self._binary("Mul", o, True)
    def __truediv__(self, o): return self._binary("Div", o)
    def __rtruediv__(self, o): return self._binary("Div", o, True)
    def __neg__(self): return Sym(self.g, self.g.node("Neg", [self.name]))

    def __getitem__(self, key) -> Sym:
        """Basic slicing with unit steps, e.g. ``h[:, 0:1, :]`` or ``h[:, -1:, :]``."""
        key = key if isinstance(key, tuple) else (key,)
        starts, ends, axes = [], [], []
        for axis, s in enumerate(key):
            if not isinstance(s, slice) or s.step not in (None, 1):
                raise TypeError(f"symbolic ONNX tensors support unit-step slices only, got {s!r}")
            if s == slice(None):
                continue
            starts.append(0 if s.start is None else s.start)
            ends.append(INT64_MAX if s.stop is None else s.stop)
            axes.append(axis)
        if not axes:
            return self
        c = lambda v: self.g.const(v, np.int64)
        return Sym(self.g, self.g.node("Slice", [self.name, c(starts), c(ends), c(axes)]))


class _ShapeOf:
    """``ops.shape(x)``: indexing gives dimension i as an int64 [1] tensor (Shape with start/end)."""

    def __init__(self, x: Sym):
        self.x = x

    def __getitem__(self, i: int) -> Sym:
        end = {} if i == -1 else {"end": i + 1}
        return Sym(self.x.g, self.x.g.node("Shape", [self.x.name], start=i, **end))


class OnnxOps(BaseOps):
    """The ``runtimes.forward.Ops`` protocol over ``Sym`` values (see the module docstring)."""

    def __init__(self, builder: GraphBuilder):
        self.g = builder

    def _n(self, op: str, *inputs, **attrs) -> Sym:
        return Sym(self.g, self.g.node(op, [i.name if isinstance(i, Sym) else i for i in inputs], **attrs))

    def param(self, name: str, array) -> Sym:
        """A weight, stored as a float32 initializer under its canonical name."""
        return Sym(self.g, self.g.initializer(name, np.asarray(array, dtype=FLOAT)))

    def _reduce(self, op: str, x: Sym, axis: int) -> Sym:
        # ReduceSum takes axes as an input from opset 13, the other reductions from opset 18
        as_input = op == "ReduceSum" or self.g.opset >= 18
        if as_input:
            return self._n(op, x, self.g.const([axis], np.int64), keepdims=1)
        return self._n(op, x, axes=[axis], keepdims=1)

    def matmul(self, a, b): return self._n("MatMul", a, b)
    def transpose(self, x, axes): return self._n("Transpose", x, perm=list(axes))
    def erf(self, x): return self._n("Erf", x)
    def tanh(self, x): return self._n("Tanh", x)
    def exp(self, x): return self._n("Exp", x)
    def sqrt(self, x): return self._n("Sqrt", x)
    def maximum(self, x, y): return self._n("Max", x, y)
    def take(self, table, ids): return self._n("Gather", table, ids, axis=0)
    def mean(self, x, axis): return self._reduce("ReduceMean", x, axis)
    def max(self, x, axis): return self._reduce("ReduceMax", x, axis)
    def sum(self, x, axis): return self._reduce("ReduceSum", x, axis)
    def to_float(self, x): return self._n("Cast", x, to=TensorProto.FLOAT)
    def float_min(self) -> float: return float(np.finfo(FLOAT).min)

    def shape(self, x: Sym) -> _ShapeOf:
        return _ShapeOf(x)

    def reshape(self, x: Sym, shape: Iterable) -> Sym:
        pieces = [p.name if isinstance(p, Sym) else self.g.const([int(p)], np.int64) for p in shape]
        target = pieces[0] if len(pieces) == 1 else self.g.node("Concat", pieces, axis=0)
        return self._n("Reshape", x, target)

    def arange(self, n) -> Sym:
        """int64 0..n-1; ``n`` is a python int or a [1] dimension tensor."""
        if not isinstance(n, Sym):
            return Sym(self.g, self.g.const(np.arange(n, dtype=np.int64), np.int64))
        scalar = self._n("Squeeze", n, self.g.const([0], np.int64))
        return self._n("Range", self.g.const(0, np.int64), scalar, self.g.const(1, np.int64))

    def less_equal(self, a, b) -> Sym:
        return self.to_float(self._n("LessOrEqual", a, b))


# ---- patterns: forward.py's blocks as subgraphs to find in an emitted graph ------------------------

class Index:
    """Producer/consumer maps and constant lookup over a graph (what ``Pattern.match`` reads)."""

    def __init__(self, graph: onnx.GraphProto):
        self.inits = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in graph.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in graph.output}

    def const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def is_weight(self, name: str) -> bool:
        return name in self.inits


class _Weights(dict):
    """``p[name]``: a weight named ``name``, created on first use (any shape: only wiring matters)."""

    def __init__(self, ops: OnnxOps):
        super().__init__()
        self.ops = ops

    def __missing__(self, name: str) -> Sym:
        self[name] = self.ops.param(name, np.zeros((1, 1), FLOAT))
        return self[name]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Pattern:
    """The subgraph ``fn(ops, p, *inputs)`` emits over OnnxOps (opset ``opset``), to match in a graph.

    ``fn`` is built from forward.py's functions; ``p`` hands out weights by name. The
    pattern is finished by ``GraphBuilder.model`` like the export, so weight transposes are
    folded into ``<name>.T`` there too. Its tensors match a graph's tensors as follows:
    an input (named by ``inputs``) any tensor, a weight any initializer, a constant an
    initializer of equal dtype, shape and value, a node's output the output of a node with
    the same domain, op type and attributes whose inputs match in order. The same pattern
    tensor must match the same graph tensor everywhere. The match ends in the ``anchor``
    tensor: the block's output, or an inner tensor chosen with ``at``.
    """

    def __init__(self, fn: Callable, inputs: Sequence[str], opset: int):
        g = GraphBuilder(opset)
        ops = OnnxOps(g)
        out = fn(ops, _Weights(ops), *(g.input(name, []) for name in inputs))
        graph = g.model({"out": (out, [])}).graph
        self.nodes_by_output = {o: n for n in graph.node for o in n.output}
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name in g.constants}
        self.weights = {t.name for t in graph.initializer} - set(self.consts)
        self._select("out")

    def _select(self, anchor: str) -> None:
        self.anchor, self.inner, todo = anchor, [], [anchor]     # inner: tensors produced inside the match
        while todo:
            name = todo.pop()
            if name in self.nodes_by_output and name not in self.inner:
                self.inner.append(name)
                todo += list(self.nodes_by_output[name].input)
        self.op_type = self.nodes_by_output[anchor].op_type

    def at(self, anchor: str) -> Pattern:
        """The same pattern ending in ``anchor`` (an inner tensor): what computes it."""
        sub = copy.copy(self)
        sub._select(anchor)
        return sub

    def reader(self, name: str) -> onnx.NodeProto:
        """The pattern node reading ``name`` (a weight read once, say)."""
        return next(n for n in self.nodes_by_output.values() if name in n.input)

    def match(self, ix: Index, tensor: str) -> dict[str, str] | None:
        """pattern tensor name -> graph tensor name, if the block computes ``tensor``; else None."""
        bound: dict[str, str] = {}

        def same(p: str, t: str) -> bool:
            if p in bound:
                return bound[p] == t
            bound[p] = t
            if p in self.consts:
                v, want = ix.const(t), self.consts[p]
                return v is not None and v.dtype == want.dtype and v.shape == want.shape and bool(np.all(v == want))
            if p in self.weights:
                return ix.is_weight(t)
            pn, tn = self.nodes_by_output.get(p), ix.producer.get(t)
            if pn is None:                                        # an input of the pattern
                return True
            return (tn is not None and (tn.domain, tn.op_type, len(tn.input)) == (pn.domain, pn.op_type, len(pn.input))
                    and list(tn.output).index(t) == list(pn.output).index(p) and _attrs(tn) == _attrs(pn)
                    and all(same(a, b) for a, b in zip(pn.input, tn.input)))

        return bound if same(self.anchor, tensor) else None

    def nodes(self, ix: Index, found: Mapping[str, str]) -> dict[str, onnx.NodeProto]:
        """The graph's nodes in the match ``found``, by name."""
        return {n.name: n for n in (ix.producer[found[p]] for p in self.inner)}

    def private_nodes(self, ix: Index, found: Mapping[str, str]) -> set[str] | None:
        """The match's node names if nothing outside it reads a tensor inside it (but the anchor), else None."""
        names = set(self.nodes(ix, found))
        for p in self.inner:
            t = found[p]
            if p != self.anchor and (t in ix.outputs or any(c.name not in names for c in ix.consumers[t])):
                return None
        return names
