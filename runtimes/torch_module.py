"""A torch.nn.Module around runtimes/forward.py: what the TorchScript and torch.export artifacts hold.

``ElectraModule(cfg, head, tensors)`` registers every canonical tensor as a frozen
parameter at its canonical dotted path (``state_dict()`` keys are exactly the canonical
names; float32, dense kernels [out, in]) and its ``forward`` calls the one shared
``forward`` with torch ops -- the math is not written a second time here.

Inputs, positionally: ``input_ids``, ``attention_mask``, ``token_type_ids``, int64,
[B, S] ([B, K, S] for multiple-choice). Output: a dict of float32 tensors, the head's
outputs first under their transformers names (``last_hidden_state``, ``logits``,
``start_logits``/``end_logits``), then ``hidden_states.0`` (embedding output) ...
``hidden_states.L`` for per-layer drift reports.

The converters save this module after runtimes/torch_fuse has swapped forward.py's
LayerNorm/softmax/GELU blocks for torch's fused kernels, and check the result against
the unfused module.

Tied MLM decoder: a tied checkpoint has no ``generator_lm_head.weight`` (schemas TIES),
and forward.py reads the word-embedding table for the decoder, so a saved artifact holds
that table once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch

from electra_bridge.schemas import ElectraConfig, get_head

from .forward import forward
from .ops_torch import TorchOps
from .torch_artifacts import HIDDEN_PREFIX, INPUT_NAMES


def _owner(root: torch.nn.Module, path: list[str]) -> torch.nn.Module:
    """The submodule at ``path`` below ``root``, created (empty) where missing."""
    module = root
    for part in path:
        if part not in module._modules:
            module.add_module(part, torch.nn.Module())
        module = module._modules[part]
    return module


class ElectraModule(torch.nn.Module):
    def __init__(self, cfg: ElectraConfig, head: str, tensors: Mapping[str, np.ndarray], *,
                 hidden_states: bool = True):
        super().__init__()
        get_head(head)
        self.cfg, self.head, self.hidden_states = cfg, head, hidden_states
        self._ops = TorchOps()
        self._names: list[str] = sorted(tensors)
        for name in self._names:
            *path, leaf = name.split(".")
            param = torch.nn.Parameter(self._ops.param(tensors[name]), requires_grad=False)
            _owner(self, path).register_parameter(leaf, param)

    @property
    def output_names(self) -> tuple[str, ...]:
        states = tuple(f"{HIDDEN_PREFIX}{i}" for i in range(self.cfg.num_hidden_layers + 1)) if self.hidden_states else ()
        return get_head(self.head).output_names + states

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # attribute reads (not named_parameters): torch.fx's tracer turns them into graph nodes,
        # so ops on a parameter alone (the tied decoder's transpose) stay in the graph
        params = {name: functools.reduce(getattr, name.split("."), self) for name in self._names}
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        result = forward(params, self.cfg, self.head, batch, self._ops)
        out = dict(result.outputs)
        if self.hidden_states:
            out.update({f"{HIDDEN_PREFIX}{i}": s for i, s in enumerate(result.hidden_states)})
        return out


def example_inputs(cfg: ElectraConfig, head: str, batch: int = 2, seq: int = 8,
                   choices: int = 2) -> tuple[torch.Tensor, ...]:
    """int64 example inputs for tracing/export: sizes >= 2 so no dim is specialized as 0/1,
    with padding and both segment ids so every branch of the math is exercised."""
    from .probe import probe_batch

    seq = min(seq, cfg.max_position_embeddings)
    arrays = probe_batch(cfg, head, batch=batch, seq=seq, choices=choices, seed=1)
    return tuple(torch.from_numpy(arrays[name]) for name in INPUT_NAMES)


def from_checkpoint(ckpt, *, hidden_states: bool = True) -> ElectraModule:
    """An eval-mode ElectraModule holding ``ckpt``'s tensors (loads lazy tensors, float32)."""
    return ElectraModule(ckpt.hf_config, ckpt.head, ckpt.arrays(), hidden_states=hidden_states).eval()
