"""Fused torch kernels for the shared forward pass, found by matching forward.py's own blocks.

forward.py spells LayerNorm, softmax and exact GELU out in primitive ops (that is what
keeps numpy/TF/JAX/torch on one definition). In torch that costs ~30 elementwise
kernels per layer where transformers runs ~8, which on a CPU is most of the gap to
transformers' eager model. ``fuse(fn)`` traces ``fn`` with torch.fx, then replaces each
occurrence of a block with torch's single kernel for the same formula:

  * ``forward.layer_norm`` (biased variance, eps from the config) -> F.layer_norm
  * ``forward.softmax`` (max-shifted, last axis) -> torch.softmax
  * ``forward.ACTIVATIONS["gelu"]`` (exact erf form) -> F.gelu (approximate="none")

The patterns are traced from forward.py itself, not re-typed here, so an edit there
either still matches (same math) or stops matching (slower, never different). Sizes
stay symbolic in the fx graph, so the result can be traced or exported with dynamic
batch and sequence dims. The fused kernels round differently from the op chains
(~1e-7 on float32), well inside the 1e-5 tolerance, and tests check both. With the half ops
(ops_torch.HalfTorchOps) the LayerNorm replacement first widens its input to float32, as the
block it replaces does.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable

import torch
import torch.fx

from .forward import ACTIVATIONS, layer_norm, softmax

log = logging.getLogger(__name__)


def _patterns(eps_values: tuple[float, ...], ops) -> list[tuple[str, Callable, Callable]]:
    """(name, pattern, replacement): patterns call forward.py's blocks with torch ops."""
    out = []
    for eps in eps_values:
        def ln_pattern(x, w, b, eps=eps):
            return layer_norm(x, {"n.weight": w, "n.bias": b}, "n", eps, ops)

        def ln_replacement(x, w, b, eps=eps):
            return torch.nn.functional.layer_norm(x, w.shape, w, b, eps)

        def ln_replacement_half(x, w, b, eps=eps):
            # half ops (ops_torch.HalfTorchOps): LayerNorm's input may be half, its weights and
            # statistics are float32, and the block it replaces returns float32
            return torch.nn.functional.layer_norm(x.to(torch.float32), w.shape, w, b, eps)

        if getattr(ops, "dtype", torch.float32) != torch.float32:
            ln_replacement = ln_replacement_half

        out.append(("layer_norm", ln_pattern, ln_replacement))

    def softmax_pattern(x):
        return softmax(x, ops)

    def softmax_replacement(x):
        return torch.softmax(x, -1)

    def gelu_pattern(x):
        return ACTIVATIONS["gelu"](x, ops)

    def gelu_replacement(x):
        return torch.nn.functional.gelu(x)

    return [*out, ("softmax", softmax_pattern, softmax_replacement), ("gelu", gelu_pattern, gelu_replacement)]


def _eps_candidates(gm: torch.fx.GraphModule) -> tuple[float, ...]:
    """Float literals added to a graph value: LayerNorm's eps is among them (a candidate
    that is not an eps matches no LayerNorm pattern and changes nothing)."""
    found = {a for n in gm.graph.nodes if n.op == "call_function" and n.target is operator.add
             for a in n.args if isinstance(a, float) and 0.0 < a < 1e-3}
    return tuple(sorted(found))


def fuse_graph(gm: torch.fx.GraphModule, ops) -> dict[str, int]:
    """Rewrite ``gm`` in place; returns how many blocks of each kind were replaced."""
    counts: dict[str, int] = {}
    for name, pattern, replacement in _patterns(_eps_candidates(gm), ops):
        matches = torch.fx.subgraph_rewriter.replace_pattern(gm, pattern, replacement)
        counts[name] = counts.get(name, 0) + len(matches)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    log.debug("fused torch kernels: %s", counts)
    return counts


def fuse(root: torch.nn.Module | Callable, ops) -> torch.fx.GraphModule:
    """fx-trace ``root`` (an nn.Module -- parameters become get_attr nodes under their
    qualified names -- or a function of dicts of tensors) and fuse it; the replacement
    counts are kept in ``fused_counts``."""
    gm = torch.fx.symbolic_trace(root)
    gm.fused_counts = fuse_graph(gm, ops)
    return gm
