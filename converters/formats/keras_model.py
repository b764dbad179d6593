"""The ELECTRA graph as a Keras 3 functional model: standard layers and ``keras.ops`` only.

No custom class, no Lambda: ``keras.saving.load_model("model.keras")`` rebuilds it with Keras
alone, on any backend. Each parameterised layer is named after its canonical module with ``-``
for ``.`` (``encoder-layer-0-attention-self-query``, schemas/tensors.py) and is one of ``Dense``
(kernel ``[in, out]``), ``Embedding`` or ``LayerNormalization`` (``epsilon`` from the config).

The graph is rank-agnostic over its leading axes: the same layers run on ``[B, S]`` inputs and,
for multiple-choice, on ``[B, K, S]`` ones, so batch, choices and sequence are all dynamic
without a reshape that would need them (attention heads are split with ``split``/``stack``).
Semantics are the reference's (runtimes/forward.py, whose activations and softmax are used
here over runtimes/ops_keras.py): position ids 0..S-1, exact erf GELU, additive
``(1 - mask) * finfo(float32).min`` attention bias, causal only for causal-lm, the generator
head's hard-coded gelu, SequenceSummary pooling. Hidden states are outputs
``hidden_states.0`` (embeddings) .. ``hidden_states.L``; for multiple-choice they keep the
choices axis, ``[B, K, S, H]`` (transformers flattens it to ``[B*K, S, H]``).

Keras 3 has no standard layer that reuses an embedding table as an output projection
(keras-hub's ``ReversibleEmbedding`` is a custom class), so the LM head is a ``Dense`` named
``generator_lm_head`` whose kernel is a copy of the word table when the config ties them.
"""

from __future__ import annotations

import math

import numpy as np

from electra_bridge.schemas import ElectraConfig, get_head, head_shapes

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def layer_name(module: str) -> str:
    """The Keras layer of a canonical module: ``.`` -> ``-`` (Keras' torch backend keys its
    ParameterDict by variable path, and torch refuses ``.`` in a parameter name)."""
    return module.replace(".", "-")


def hidden_state_name(i: int) -> str:
    return f"hidden_states.{i}"


def build(cfg: ElectraConfig, head: str):
    """A fresh (randomly initialised) functional model of ``head`` under ``cfg``."""
    import keras
    from keras import layers, ops

    from electra_bridge.runtimes.forward import activation, softmax
    from electra_bridge.runtimes.ops_keras import KerasOps

    kops, spec, shapes = KerasOps(), get_head(head), head_shapes(cfg, head)
    eps = cfg.layer_norm_eps

    def dense(name: str, x, units: int | None = None):
        return layers.Dense(units or shapes[f"{name}.weight"][0], name=layer_name(name))(x)

    def norm(name: str, x):
        return layers.LayerNormalization(epsilon=eps, name=layer_name(name))(x)

    def embedding(name: str, ids):
        rows, width = shapes[f"{name}.weight"]
        return layers.Embedding(rows, width, name=layer_name(name))(ids)

    rank = 2 if spec.choices else 1                                  # axes after the batch axis
    inputs = {n: keras.Input((None,) * rank, dtype="int32", name=n) for n in INPUTS}
    ids, types = inputs["input_ids"], inputs["token_type_ids"]
    positions = ops.cumsum(ops.ones_like(ids), axis=-1) - 1          # [..., S]: 0..S-1 on every row
    x = embedding("embeddings.word_embeddings", ids) + embedding("embeddings.token_type_embeddings", types)
    x = norm("embeddings.LayerNorm", x + embedding("embeddings.position_embeddings", positions))
    if cfg.has_embeddings_project:
        x = dense("embeddings_project", x)

    keep = ops.cast(inputs["attention_mask"], "float32")[..., None, None, :]       # [..., 1, 1, S]
    if spec.causal:                                                   # key position <= query position
        allowed = ops.less_equal(positions[..., None, :], positions[..., :, None])  # [..., S, S]
        keep = keep * ops.cast(allowed, "float32")[..., None, :, :]
    bias = (1.0 - keep) * kops.float_min()

    heads, d = cfg.num_attention_heads, cfg.head_dim

    def split(t):                                                     # [..., S, H] -> [..., N, S, d]
        return ops.stack(ops.split(t, heads, axis=-1), axis=-3)

    states = [x]
    for i in range(cfg.num_hidden_layers):
        name = f"encoder.layer.{i}"
        q, k, v = (split(dense(f"{name}.attention.self.{p}", x)) for p in ("query", "key", "value"))
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) / math.sqrt(d)
        context = ops.matmul(softmax(scores + bias, kops), v)
        context = ops.concatenate(ops.unstack(context, heads, axis=-3), axis=-1)  # [..., S, H]
        attn = norm(f"{name}.attention.output.LayerNorm", dense(f"{name}.attention.output.dense", context) + x)
        inner = activation(cfg.hidden_act, dense(f"{name}.intermediate.dense", attn), kops)
        x = norm(f"{name}.output.LayerNorm", dense(f"{name}.output.dense", inner) + attn)
        states.append(x)

    outputs = _head(head, cfg, x, dense, norm, activation, kops, ops)
    outputs.update({hidden_state_name(i): s for i, s in enumerate(states)})
    return keras.Model(inputs, outputs, name=f"electra_{head.replace('-', '_')}")


def _head(head: str, cfg: ElectraConfig, h, dense, norm, activation, kops, ops) -> dict:
    fn = get_head(head).output_fn
    if fn == "last_hidden_state":
        return {"last_hidden_state": h}
    if fn == "discriminator_logits":
        x = activation(cfg.hidden_act, dense("discriminator_predictions.dense", h), kops)
        return {"logits": ops.squeeze(dense("discriminator_predictions.dense_prediction", x), axis=-1)}
    if fn == "generator_logits":
        x = activation("gelu", dense("generator_predictions.dense", h), kops)    # PT/TF hard-code gelu
        x = norm("generator_predictions.LayerNorm", x)
        return {"logits": dense("generator_lm_head", x, cfg.vocab_size)}
    if fn == "classification_logits":
        x = activation("gelu", dense("classifier.dense", h[..., 0, :]), kops)
        return {"logits": dense("classifier.out_proj", x)}
    if fn == "choice_logits":                                         # h: [B, K, S, H]
        pooled = {"first": lambda: h[..., 0, :], "last": lambda: h[..., -1, :]}.get(
            cfg.summary_type, lambda: ops.mean(h, axis=-2))()
        if cfg.summary_use_proj:
            pooled = dense("sequence_summary.summary", pooled)
        pooled = activation(cfg.summary_activation, pooled, kops)
        return {"logits": ops.squeeze(dense("classifier", pooled), axis=-1)}      # [B, K]
    if fn == "token_logits":
        return {"logits": dense("classifier", h)}
    if fn == "span_logits":
        logits = dense("qa_outputs", h)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
    raise ValueError(f"no Keras graph for head output {fn!r}")


def variables(model) -> dict[str, object]:
    """``<layer name>/<variable name>`` -> the Keras variable, for every layer's weights."""
    return {f"{layer.name}/{v.name}": v for layer in model.layers for v in layer.weights}


def run(model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs on a numpy batch, as float32 numpy arrays."""
    from keras import ops

    out = model({n: np.asarray(batch[n], dtype=np.int32) for n in INPUTS}, training=False)
    return {k: np.asarray(ops.convert_to_numpy(v), dtype=np.float32) for k, v in out.items()}
