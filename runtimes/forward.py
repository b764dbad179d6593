"""The ELECTRA forward pass, written once, over a tiny ``ops`` namespace.

``forward(params, cfg, head, batch, ops)`` is pure: ``params`` maps canonical names
(schemas/tensors.py; dense kernels [out, in]) to arrays of the ops' framework, ``batch``
holds int64 ``input_ids``, ``attention_mask`` and ``token_type_ids`` of shape [B, S]
([B, K, S] for multiple-choice). numpy, torch, TF and JAX each supply ``ops``
(runtimes/ops_*.py); an ops namespace needs exactly the functions ``Ops`` lists.

Numerics match HF PyTorch's ElectraModel and heads: exact erf GELU for "gelu", LayerNorm
with cfg.layer_norm_eps over the last axis (biased variance), additive attention mask
``(1 - mask) * finfo(dtype).min``, causal mask only for causal-lm, generator head
activation hard-coded to "gelu" as PT/TF do, SequenceSummary as PT defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from electra_bridge.schemas import ElectraConfig, get_head


class Ops(Protocol):
    """What a framework provides. ``Array`` is the framework's tensor type."""

    def matmul(self, a: Any, b: Any) -> Any: ...            # batched a @ b
    def transpose(self, x: Any, axes: tuple[int, ...]) -> Any: ...
    def reshape(self, x: Any, shape: tuple[Any, ...]) -> Any: ...  # -1 allowed
    def shape(self, x: Any) -> tuple[Any, ...]: ...         # dims usable in reshape
    def take(self, table: Any, ids: Any) -> Any: ...       # table[ids] along axis 0
    def erf(self, x: Any) -> Any: ...
    def tanh(self, x: Any) -> Any: ...
    def exp(self, x: Any) -> Any: ...
    def sqrt(self, x: Any) -> Any: ...
    def maximum(self, x: Any, y: Any) -> Any: ...
    def mean(self, x: Any, axis: int) -> Any: ...           # keepdims=True
    def max(self, x: Any, axis: int) -> Any: ...            # keepdims=True
    def sum(self, x: Any, axis: int) -> Any: ...            # keepdims=True
    def to_float(self, x: Any) -> Any: ...                  # cast (int mask) to the float dtype
    def arange(self, n: Any) -> Any: ...                    # int64 0..n-1
    def less_equal(self, a: Any, b: Any) -> Any: ...        # elementwise a <= b, as float
    def float_min(self) -> float: ...                       # finfo(float dtype).min
    def linear(self, x: Any, weight: Any, bias: Any) -> Any: ...  # x @ weight.T + bias, weight [out, in]
    def compile(self, fn: Any) -> Any: ...                  # fn(params, batch) -> a faster equivalent


class BaseOps:
    """The two ``Ops`` members with a framework-neutral default; every ops class derives from it.

    ``linear`` is the two-op form (a framework with a fused kernel, torch's F.linear,
    overrides it); ``compile`` is the identity (tf.function / jax.jit override it).
    """

    def linear(self, x, weight, bias):
        return self.matmul(x, self.transpose(weight, (1, 0))) + bias

    def compile(self, fn):
        return fn


@dataclass(frozen=True)
class Result:
    """Head outputs by name plus hidden states (embedding output, then one per layer)."""

    outputs: dict[str, Any]
    hidden_states: tuple[Any, ...]


# ---- building blocks -------------------------------------------------------------------------

def linear(x, p, name, ops):
    """x @ W.T + b with W [out, in] (the canonical layout), through ``ops.linear``."""
    return ops.linear(x, p[f"{name}.weight"], p[f"{name}.bias"])


def layer_norm(x, p, name, eps, ops):
    mean = ops.mean(x, -1)                                 # [..., 1]
    centered = x - mean
    var = ops.mean(centered * centered, -1)                # biased, as torch.nn.LayerNorm
    normed = centered / ops.sqrt(var + eps)
    return normed * p[f"{name}.weight"] + p[f"{name}.bias"]


def softmax(x, ops):
    shifted = x - ops.max(x, -1)
    e = ops.exp(shifted)
    return e / ops.sum(e, -1)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

#: hidden_act name -> function(x, ops). "gelu" is the exact erf form (never the tanh one).
ACTIVATIONS = {
    "gelu": lambda x, ops: 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0)))),
    "gelu_new": lambda x, ops: 0.5 * x * (1.0 + ops.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
    "gelu_pytorch_tanh": lambda x, ops: 0.5 * x * (1.0 + ops.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
    "gelu_fast": lambda x, ops: 0.5 * x * (1.0 + ops.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "relu": lambda x, ops: ops.maximum(x, 0.0 * x),
    "silu": lambda x, ops: x / (1.0 + ops.exp(-x)),
    "swish": lambda x, ops: x / (1.0 + ops.exp(-x)),
    "tanh": lambda x, ops: ops.tanh(x),
    "linear": lambda x, ops: x,
    None: lambda x, ops: x,
}


def activation(name, x, ops):
    return ACTIVATIONS[name](x, ops)


# ---- backbone ----------------------------------------------------------------------------------

def embed(p, cfg: ElectraConfig, input_ids, token_type_ids, ops):
    """[B, S] ids -> [B, S, H] (after LayerNorm and, when E != H, embeddings_project)."""
    seq = ops.shape(input_ids)[1]
    words = ops.take(p["embeddings.word_embeddings.weight"], input_ids)           # [B, S, E]
    types = ops.take(p["embeddings.token_type_embeddings.weight"], token_type_ids)  # [B, S, E]
    positions = ops.take(p["embeddings.position_embeddings.weight"], ops.arange(seq))  # [S, E]
    x = words + types + positions                                                 # PT order: word+type, +pos
    x = layer_norm(x, p, "embeddings.LayerNorm", cfg.layer_norm_eps, ops)
    if cfg.has_embeddings_project:
        x = linear(x, p, "embeddings_project", ops)                              # [B, S, H]
    return x


def attention_bias(attention_mask, causal: bool, ops):
    """[B, S] 0/1 mask -> additive bias [B, 1, S|1, S] of 0 and finfo.min (HF PT semantics)."""
    keep = ops.to_float(attention_mask)                                      # [B, S]
    seq = ops.shape(attention_mask)[1]
    keep = ops.reshape(keep, (-1, 1, 1, seq))                                 # [B, 1, 1, S]
    if causal:
        pos = ops.arange(seq)
        allowed = ops.less_equal(ops.reshape(pos, (1, seq)), ops.reshape(pos, (seq, 1)))  # [S, S] key <= query
        keep = keep * ops.reshape(allowed, (1, 1, seq, seq))                 # [B, 1, S, S]
    return (1.0 - keep) * ops.float_min()


def encoder_layer(x, p, i, cfg: ElectraConfig, bias, ops):
    """One post-LN transformer layer: [B, S, H] -> [B, S, H]."""
    name = f"encoder.layer.{i}"
    heads, d = cfg.num_attention_heads, cfg.head_dim
    batch, seq = ops.shape(x)[0], ops.shape(x)[1]

    def split(t):                                                            # [B, S, H] -> [B, N, S, d]
        return ops.transpose(ops.reshape(t, (batch, seq, heads, d)), (0, 2, 1, 3))

    q = split(linear(x, p, f"{name}.attention.self.query", ops))
    k = split(linear(x, p, f"{name}.attention.self.key", ops))
    v = split(linear(x, p, f"{name}.attention.self.value", ops))
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(d)     # [B, N, S, S]
    probs = softmax(scores + bias, ops)
    context = ops.matmul(probs, v)                                           # [B, N, S, d]
    context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, seq, heads * d))
    attn = linear(context, p, f"{name}.attention.output.dense", ops)
    attn = layer_norm(attn + x, p, f"{name}.attention.output.LayerNorm", cfg.layer_norm_eps, ops)
    inner = activation(cfg.hidden_act, linear(attn, p, f"{name}.intermediate.dense", ops), ops)  # [B, S, I]
    out = linear(inner, p, f"{name}.output.dense", ops)
    return layer_norm(out + attn, p, f"{name}.output.LayerNorm", cfg.layer_norm_eps, ops)


def encode(p, cfg: ElectraConfig, input_ids, attention_mask, token_type_ids, ops, causal=False):
    """Backbone: returns the hidden states, embedding output first, each [B, S, H]."""
    x = embed(p, cfg, input_ids, token_type_ids, ops)
    bias = attention_bias(attention_mask, causal, ops)
    states = [x]
    for i in range(cfg.num_hidden_layers):
        x = encoder_layer(x, p, i, cfg, bias, ops)
        states.append(x)
    return tuple(states)


# ---- heads ---------------------------------------------------------------------------------------

def _first_token(h, ops):
    return ops.reshape(h[:, 0:1, :], (ops.shape(h)[0], ops.shape(h)[2]))     # [B, H]


def _lm_logits(h, p, cfg, ops):
    x = linear(h, p, "generator_predictions.dense", ops)                     # [B, S, E]
    x = activation("gelu", x, ops)                                           # PT/TF hard-code gelu here
    x = layer_norm(x, p, "generator_predictions.LayerNorm", cfg.layer_norm_eps, ops)
    decoder = p["embeddings.word_embeddings.weight" if cfg.tie_word_embeddings else "generator_lm_head.weight"]
    return ops.matmul(x, ops.transpose(decoder, (1, 0))) + p["generator_lm_head.bias"]  # [B, S, V]


def _summary(h, cfg, ops):
    """SequenceSummary pooling (PT ElectraSequenceSummary): [B, S, H] -> [B, H]."""
    if cfg.summary_type == "first":
        return _first_token(h, ops)
    if cfg.summary_type == "last":
        return ops.reshape(h[:, -1:, :], (ops.shape(h)[0], ops.shape(h)[2]))
    return ops.reshape(ops.mean(ops.transpose(h, (0, 2, 1)), -1), (ops.shape(h)[0], ops.shape(h)[2]))  # "mean"


def last_hidden_state(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    return {"last_hidden_state": h}


def discriminator_logits(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    x = activation(cfg.hidden_act, linear(h, p, "discriminator_predictions.dense", ops), ops)
    logits = linear(x, p, "discriminator_predictions.dense_prediction", ops)  # [B, S, 1]
    return {"logits": ops.reshape(logits, (ops.shape(h)[0], ops.shape(h)[1]))}


def generator_logits(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    return {"logits": _lm_logits(h, p, cfg, ops)}                            # [B, S, V]


def classification_logits(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    x = activation("gelu", linear(_first_token(h, ops), p, "classifier.dense", ops), ops)
    return {"logits": linear(x, p, "classifier.out_proj", ops)}            # [B, C]


def choice_logits(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    pooled = _summary(h, cfg, ops)
    if cfg.summary_use_proj:
        pooled = linear(pooled, p, "sequence_summary.summary", ops)
    pooled = activation(cfg.summary_activation, pooled, ops)
    return {"logits": linear(pooled, p, "classifier", ops)}               # [B*K, 1], reshaped by forward


def token_logits(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    return {"logits": linear(h, p, "classifier", ops)}                    # [B, S, C]


def span_logits(h, p, cfg: ElectraConfig, ops) -> dict[str, Any]:
    logits = linear(h, p, "qa_outputs", ops)                               # [B, S, 2]
    batch, seq = ops.shape(h)[0], ops.shape(h)[1]
    return {"start_logits": ops.reshape(logits[:, :, 0:1], (batch, seq)),
            "end_logits": ops.reshape(logits[:, :, 1:2], (batch, seq))}


#: Head.output_fn -> the function computing that head's outputs from the last hidden state
HEAD_FUNCTIONS = {fn.__name__: fn for fn in (last_hidden_state, discriminator_logits, generator_logits,
                                              classification_logits, choice_logits, token_logits, span_logits)}


def forward(params, cfg: ElectraConfig, head: str, batch, ops) -> Result:
    """Run ``head`` on ``batch``; see the module docstring for the contracts."""
    spec = get_head(head)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    if spec.choices:                                                         # [B, K, S] -> [B*K, S]
        n_batch, n_choices = ops.shape(ids)[0], ops.shape(ids)[1]
        ids, mask, types = (ops.reshape(t, (-1, ops.shape(t)[2])) for t in (ids, mask, types))
    states = encode(params, cfg, ids, mask, types, ops, causal=spec.causal)
    outputs = HEAD_FUNCTIONS[spec.output_fn](states[-1], params, cfg, ops)
    if spec.choices:
        outputs = {"logits": ops.reshape(outputs["logits"], (n_batch, n_choices))}
    return Result(outputs, states)
