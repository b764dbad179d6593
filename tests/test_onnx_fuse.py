"""runtimes/onnx_fuse.py on its own: every head's plain graph (forward.py over OnnxOps) fused,
checked for the kernels it must hold and run by ONNX Runtime against the plain graph."""

from collections import Counter

import numpy as np
import pytest
from helpers import HEADS, max_abs, spec

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from electra_bridge.converters import read
from electra_bridge.runtimes import probe_batch
from electra_bridge.runtimes.forward import forward
from electra_bridge.runtimes.onnx_fuse import fuse
from electra_bridge.runtimes.ops_onnx import GraphBuilder, OnnxOps
from electra_bridge.schemas import config_for_head, get_head
from electra_bridge.schemas.checkpoint import materialize

L = spec.CONFIG["num_hidden_layers"]
#: the kernels of each fused fixture graph, as the hand-written matchers produced them before
#: the patterns were traced from forward.py: one Attention and two SkipLayerNorms per layer, a
#: LayerNormalization for the embeddings (and the generator head), a BiasGelu per layer and
#: per head dense followed by gelu
ENCODER = {"Attention": L, "SkipLayerNormalization": 2 * L, "LayerNormalization": 1, "BiasGelu": L}
EXPECTED = {
    "base": ENCODER,
    "pretraining": {**ENCODER, "BiasGelu": L + 1},
    "masked-lm": {**ENCODER, "LayerNormalization": 2, "BiasGelu": L + 1},
    "causal-lm": {**ENCODER, "LayerNormalization": 2, "BiasGelu": L + 1},
    "sequence-classification": {**ENCODER, "BiasGelu": L + 1},
    "multiple-choice": {**ENCODER, "BiasGelu": L + 1},
    "token-classification": ENCODER,
    "question-answering": ENCODER,
}
#: unseen shapes (batch, sequence, choices)
SHAPES = [(1, 5, 2), (3, 19, 3)]


def plain_graph(head: str, opset: int = 17, cfg_changes=None):
    """(plain model, config): forward.py over OnnxOps, as the ONNX export builds it."""
    ckpt = read(spec.HF_SAFETENSORS / head, "safetensors")
    cfg = config_for_head(ckpt.config, head)
    builder = GraphBuilder(opset)
    ops = OnnxOps(builder)
    params = {name: ops.param(name, materialize(t)) for name, t in sorted(ckpt.tensors.items())}
    dims = ["B", "K", "S"] if get_head(head).choices else ["B", "S"]
    batch = {name: builder.input(name, dims) for name in ("input_ids", "attention_mask", "token_type_ids")}
    result = forward(params, cfg, head, batch, ops)
    outputs = {name: (result.outputs[name], []) for name in get_head(head).output_names}
    return builder.model(outputs), cfg


def run(model, batch):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, batch)))


def fused_graph(head, opset=17, quantizable=False):
    model, cfg = plain_graph(head, opset)
    counts = fuse(model, cfg, quantizable=quantizable)
    return model, cfg, counts


def assert_same_outputs(plain, fused, cfg, head, shapes=SHAPES, atol=1e-5, mutate=None):
    for b, s, k in shapes:
        batch = probe_batch(cfg, head, batch=b, seq=s, choices=k, seed=b * s)
        if mutate:
            mutate(batch)
        want, got = run(plain, batch), run(fused, batch)
        assert sorted(got) == sorted(want)
        for name in want:
            assert max_abs(got[name], want[name]) <= atol, (head, name, (b, s, k))


@pytest.mark.parametrize("quantizable", [False, True])
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("head", HEADS)
def test_fused_graph_holds_the_kernels_and_matches_the_plain_graph(head, opset, quantizable):
    plain, _ = plain_graph(head, opset)
    fused, cfg, counts = fused_graph(head, opset, quantizable)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert counts == EXPECTED[head]
    assert {op: ops[op] for op in EXPECTED[head]} == EXPECTED[head]
    assert not {"Erf", "Softmax", "ReduceMean", "ReduceMax", "Sqrt", "FastGelu"} & set(ops)  # exact erf gelu only
    assert {o.domain for o in plain.graph.node} == {""}
    assert_same_outputs(plain, fused, cfg, head)


@pytest.mark.parametrize("head,pruned", [("sequence-classification", True), ("multiple-choice", True),
                                         ("token-classification", False), ("pretraining", False)])
def test_only_heads_reading_token_0_slice_the_last_layer_tail(head, pruned):
    graph = fused_graph(head)[0].graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    sliced = [n for n in graph.node if n.op_type == "Slice" and producers.get(n.input[0]) == "Attention"]
    assert len(sliced) == (1 if pruned else 0)


def attention_nodes(model):
    return [n for n in model.graph.node if n.op_type == "Attention"]


def attribute(node, name):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


@pytest.mark.parametrize("head", ["sequence-classification", "causal-lm"])
def test_attention_masks_like_forward_even_fully_padded_rows(head):
    """Raw mask with finfo(float32).min as the fill (ONNX Runtime's default is -10000);
    causal-lm passes forward's own [B, 1, S, S] bias, so fully padded rows match too."""
    plain, _ = plain_graph(head)
    fused, cfg, _ = fused_graph(head)
    for node in attention_nodes(fused):
        if head == "causal-lm":
            assert len(node.input) == 6 and node.input[3] == "" and node.input[5]
            assert attribute(node, "unidirectional") is None
        else:
            assert len(node.input) == 4 and attribute(node, "mask_filter_value") == np.finfo(np.float32).min

    def pad_row(batch):
        batch["attention_mask"][1] = 0
    assert_same_outputs(plain, fused, cfg, head, shapes=[(2, 9, 1)], mutate=pad_row)


def test_quantizable_causal_graph_uses_unidirectional_and_the_raw_mask():
    """QAttention has no attention_bias input: the causal mask becomes unidirectional=1."""
    fused = fused_graph("causal-lm", quantizable=True)[0]
    for node in attention_nodes(fused):
        assert len(node.input) == 4 and node.input[3].endswith("/int32")
        assert attribute(node, "unidirectional") == 1
        assert attribute(node, "mask_filter_value") == np.finfo(np.float32).min


def test_packed_attention_weights_are_named_after_the_layer():
    names = {t.name for t in fused_graph("base")[0].graph.initializer}
    assert {f"encoder.layer.{i}.attention.self.qkv.{w}" for i in range(L) for w in ("weight", "bias")} <= names


def test_a_block_that_differs_from_the_pattern_is_left_alone():
    """Patterns are traced with the config: a LayerNorm eps other than the graph's matches no
    LayerNorm, and the graph keeps computing the same numbers unfused."""
    plain, cfg = plain_graph("token-classification")
    fused, _ = plain_graph("token-classification")
    counts = fuse(fused, cfg.replace(layer_norm_eps=cfg.layer_norm_eps * 2))
    assert "SkipLayerNormalization" not in counts and "LayerNormalization" not in counts
    assert counts["Attention"] == L and counts["BiasGelu"] == L
    assert_same_outputs(plain, fused, cfg, "token-classification", shapes=SHAPES[:1])
