"""Precision checks beside the numbers: prediction agreement and the float16 overflow audit.

``agreement``: per head output, the fraction of compared positions (padding excluded) where
both sides predict the same -- top-1 over the vocabulary or labels, start/end for question
answering, the replaced-token decision (logit > 0) for the discriminator -- with the
disagreeing positions. ``activation_peaks``: the float32 reference run with the largest
|activation| of each stage recorded, against float16's 65504.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from electra_bridge.schemas import get_head


#: disagreeing positions listed per agreement line in reports (the count is always exact)
MAX_LISTED = 200


@dataclass(frozen=True)
class Agreement:
    """How often A's predictions equal B's for one output: ``agree`` of ``total`` positions.

    ``kind``: "top-1" (argmax over the last axis), "replaced-token" (logit > 0), "start"/"end"
    (argmax over the unpadded positions of a row). ``disagree`` lists the positions (indices
    into the output without its class axis), at most MAX_LISTED of them.
    """

    output: str
    kind: str
    agree: int
    total: int
    disagree: tuple[tuple[int, ...], ...] = ()

    @property
    def fraction(self) -> float:
        return self.agree / self.total if self.total else 1.0

    def text(self) -> str:
        return f"{self.kind} {self.agree}/{self.total} ({100 * self.fraction:.2f}%)"


def _agree(output: str, kind: str, pa: np.ndarray, pb: np.ndarray, keep: np.ndarray) -> Agreement:
    differ = (pa != pb) & keep
    where = [tuple(int(i) for i in idx) for idx in np.argwhere(differ)[:MAX_LISTED]]
    total = int(keep.sum())
    return Agreement(output, kind, total - int(differ.sum()), total, tuple(where))


def agreement(head: str, a: dict[str, np.ndarray], b: dict[str, np.ndarray], batch: dict) -> list[Agreement]:
    """The task-level comparison of ``head``'s outputs (see Agreement); [] for ``base`` (no prediction)."""
    spec = get_head(head)
    mask = np.asarray(batch.get("attention_mask", np.ones_like(batch["input_ids"]))) > 0
    out = []
    for name, symbols in spec.outputs:
        x, y = np.asarray(a[name], np.float32), np.asarray(b[name], np.float32)
        if x.shape != y.shape or name == "last_hidden_state":
            continue
        if head == "pretraining":                                    # [B, S]: replaced or original
            out.append(_agree(name, "replaced-token", x > 0, y > 0, mask))
        elif head == "question-answering":                          # [B, S]: argmax over real tokens
            masked = [np.where(mask, v, -np.inf).argmax(-1) for v in (x, y)]
            out.append(_agree(name, name.removesuffix("_logits"), masked[0], masked[1], np.ones(x.shape[0], bool)))
        elif symbols[1] == "S":                                       # [B, S, V|C]: per real token
            out.append(_agree(name, "top-1", x.argmax(-1), y.argmax(-1), mask))
        else:                                                         # [B, C] / [B, K]: per row
            out.append(_agree(name, "top-1", x.argmax(-1), y.argmax(-1), np.ones(x.shape[0], bool)))
    return out


#: float16's largest finite value: the overflow audit's limit
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Peak:
    """The largest |activation| of one stage ("embeddings", "layer 3 attention", "layer 3 ffn", "head")
    in the float32 reference, against ``limit`` (float16's 65504)."""

    stage: str
    max_abs: float
    limit: float = FLOAT16_MAX

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.limit

    @property
    def headroom(self) -> float:
        """limit / max_abs: > 1 fits; the factor the activations could still grow by."""
        return self.limit / self.max_abs if self.max_abs > 0 else float("inf")


def _stage(param: str) -> str:
    m = re.match(r"encoder\.layer\.(\d+)\.(attention|intermediate|output)\.", param)
    if m:
        return f"layer {m[1]} " + ("attention" if m[2] == "attention" else "ffn")
    return "embeddings" if param.startswith("embeddings") else "head"


def activation_peaks(ckpt, head: str, batch: dict) -> list[Peak]:
    """The float32 reference run of ``ckpt`` with every value float16 would have to hold recorded:
    embedding sums, dense outputs, attention scores and context, residual sums (LayerNorm inputs)
    and the head's logits, grouped by stage. LayerNorm statistics, softmax and the additive
    mask are left out: a float16 export keeps them in float32 (converters/formats/onnx.py)."""
    from .forward import forward
    from .ops_numpy import NumpyOps

    class AuditOps(NumpyOps):
        def __init__(self):
            super().__init__()
            self.names: dict[int, str] = {}
            self.stage, self.peaks, self._means = "embeddings", {}, 0

        def see(self, x):
            x = np.asarray(x)
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), peak if np.isfinite(peak) else np.inf)
            return x

        def enter(self, weight):
            self.stage = _stage(self.names.get(id(weight), "")) if id(weight) in self.names else self.stage

        def take(self, table, ids):
            self.enter(table)
            return self.see(super().take(table, ids))

        def linear(self, x, weight, bias):
            self.enter(weight)
            return self.see(np.matmul(x, np.transpose(weight)) + bias)

        def matmul(self, a, b):
            return self.see(np.matmul(a, b))

        def mean(self, x, axis):
            self._means += 1
            if self._means % 2:          # layer_norm's first mean reads its input; the second, centered**2
                self.see(x)
            return super().mean(x, axis)

    ops = AuditOps()
    params = {}
    for name, tensor in ckpt.tensors.items():
        params[name] = ops.param(tensor)
        ops.names[id(params[name])] = name
    forward(params, ckpt.config, head, {k: ops.inputs(v) for k, v in batch.items()}, ops)
    order = ["embeddings", *(f"layer {i} {part}" for i in range(ckpt.config.num_hidden_layers)
                             for part in ("attention", "ffn")), "head"]
    return [Peak(stage, ops.peaks[stage]) for stage in order if stage in ops.peaks]
