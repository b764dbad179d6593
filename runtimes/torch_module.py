"""A torch.nn.Module around runtimes/forward.py: what the TorchScript and torch.export artifacts hold.

``ElectraModule(cfg, head, tensors, dtype=...)`` registers every canonical tensor as a frozen
parameter at its canonical dotted path (``state_dict()`` keys are exactly the canonical
names; dense kernels [out, in]) and its ``forward`` calls the one shared ``forward`` with
torch ops -- the math is not written a second time here.

dtype "float32" (default): every parameter and all arithmetic float32 (ops_torch.TorchOps).
dtype "float16" / "bfloat16": parameters in that dtype except the LayerNorm weights and biases
(float32: their kernel runs in float32); embeddings, matmuls and GELU in the half dtype,
LayerNorm, softmax and the attention mask in float32 (ops_torch.HalfTorchOps says why).

Inputs, positionally: ``input_ids``, ``attention_mask``, ``token_type_ids``, int64,
[B, S] ([B, K, S] for multiple-choice). Output: a dict of float32 tensors whatever the
dtype (half results are widened on the way out, exactly, so a half artifact is a drop-in
for the float32 one), the head's outputs first under their transformers names
(``last_hidden_state``, ``logits``, ``start_logits``/``end_logits``), then
``hidden_states.0`` (embedding output) ... ``hidden_states.L`` for per-layer drift reports.

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
from .ops_torch import HALF_DTYPES, HalfTorchOps, TorchOps
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
                 hidden_states: bool = True, dtype: str = "float32"):
        super().__init__()
        get_head(head)
        if dtype != "float32" and dtype not in HALF_DTYPES:
            raise ValueError(f"ElectraModule dtype {dtype!r}: float32, {', '.join(HALF_DTYPES)}")
        self.cfg, self.head, self.hidden_states, self.dtype = cfg, head, hidden_states, dtype
        self._ops = HalfTorchOps(HALF_DTYPES[dtype]) if dtype in HALF_DTYPES else TorchOps()
        self._names: list[str] = sorted(tensors)
        for name in self._names:
            *path, leaf = name.split(".")
            convert = self._ops.param32 if dtype in HALF_DTYPES and path[-1:] == ["LayerNorm"] else self._ops.param
            param = torch.nn.Parameter(convert(tensors[name]), requires_grad=False)
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
        if self.dtype in HALF_DTYPES:   # float32 outputs: exact widening; LayerNorm outputs already are
            out = {k: v.to(torch.float32) for k, v in out.items()}
        return out


def example_inputs(cfg: ElectraConfig, head: str, batch: int = 2, seq: int = 8,
                   choices: int = 2) -> tuple[torch.Tensor, ...]:
    """int64 example inputs for tracing/export: sizes >= 2 so no dim is specialized as 0/1,
    with padding and both segment ids so every branch of the math is exercised."""
    from .probe import probe_batch

    seq = min(seq, cfg.max_position_embeddings)
    arrays = probe_batch(cfg, head, batch=batch, seq=seq, choices=choices, seed=1)
    return tuple(torch.from_numpy(arrays[name]) for name in INPUT_NAMES)


def from_checkpoint(ckpt, *, hidden_states: bool = True, dtype: str = "float32") -> ElectraModule:
    """An eval-mode ElectraModule holding ``ckpt``'s tensors (loads lazy tensors) in ``dtype``."""
    return ElectraModule(ckpt.hf_config, ckpt.head, ckpt.arrays(), hidden_states=hidden_states, dtype=dtype).eval()
