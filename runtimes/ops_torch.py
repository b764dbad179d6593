"""torch ops for runtimes/forward.py: float32 CPU, line-by-line parallel to ops_numpy.

Contracts: parameters become float32 tensors sharing memory with the numpy arrays
(``torch.from_numpy``, no copy when the array already is contiguous float32); inputs
become int64 tensors; every call runs under ``torch.inference_mode``. "gelu" stays the
exact erf form because forward.py spells it out with ``ops.erf``.

The same ops serve the TorchScript and torch.export artifacts (runtimes/torch_module.py):
sizes are read with ``x.shape`` and passed on unchanged, so a tracer records them as
graph values (or torch.export as symbols) instead of freezing the example's numbers.

``HalfTorchOps(torch.float16 | torch.bfloat16)`` is the half-precision variant the artifacts
use for ``convert --dtype float16|bfloat16``: parameters, embedding lookups, matmuls (dense
layers, attention scores and context, the LM decoder) and GELU run in the half dtype, while
LayerNorm statistics, softmax and the additive attention mask run in float32 (see the class).
"""

from __future__ import annotations

import numpy as np
import torch

from .forward import BaseOps

NAME = "torch"


class TorchOps(BaseOps):
    """float32 throughout; erf is torch.erf (exact, never a tanh approximation)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype   # of parameters, products and the mask (HalfTorchOps: mask float32)

    # ---- conversions used by CheckpointRunner -------------------------------------------
    def param(self, array) -> torch.Tensor:
        arr = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
        if not arr.flags.writeable:  # from_numpy warns on read-only (memory-mapped) arrays
            arr = arr.copy()
        return torch.from_numpy(arr)

    def inputs(self, array) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(array, dtype=np.int64)))

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    def compile(self, fn):
        """fx-trace ``fn`` and swap forward.py's LayerNorm/softmax/GELU blocks for torch's
        fused kernels (runtimes/torch_fuse.py); run it under inference_mode."""
        from .torch_fuse import fuse

        graph = fuse(fn, self)

        def run(params, batch):
            with torch.inference_mode():
                return graph(params, batch)
        run.fused_counts = graph.fused_counts
        return run

    # ---- the Ops protocol ---------------------------------------------------------------
    matmul = staticmethod(torch.matmul)
    exp = staticmethod(torch.exp)
    tanh = staticmethod(torch.tanh)
    sqrt = staticmethod(torch.sqrt)
    erf = staticmethod(torch.erf)
    maximum = staticmethod(torch.maximum)

    def linear(self, x, weight, bias):
        """x @ weight.T + bias, weight [out, in]: one addmm instead of matmul + add (forward.linear's hook)."""
        return torch.nn.functional.linear(x, weight, bias)

    def transpose(self, x, axes):
        return x.permute(axes)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def shape(self, x):
        return x.shape

    def take(self, table, ids):
        return torch.nn.functional.embedding(ids, table)   # table[ids] along axis 0

    def mean(self, x, axis):
        return torch.mean(x, dim=axis, keepdim=True)

    def max(self, x, axis):
        return torch.amax(x, dim=axis, keepdim=True)

    def sum(self, x, axis):
        return torch.sum(x, dim=axis, keepdim=True)

    def to_float(self, x):
        return x.to(self.dtype)

    def arange(self, n):
        return torch.arange(n, dtype=torch.int64)

    def less_equal(self, a, b):
        return torch.le(a, b).to(self.dtype)

    def float_min(self) -> float:
        return float(torch.finfo(self.dtype).min)


class HalfTorchOps(TorchOps):
    """Matmuls and embeddings in ``dtype`` (float16 or bfloat16); LayerNorm, softmax and the mask in float32.

    Why these splits: float16 holds at most 65504, and LayerNorm's sum of squares passes that once
    activations pass 256; softmax's exp and its sum and the additive mask (``finfo.min``) overflow
    the same way. So ``mean`` (LayerNorm's two statistics, SequenceSummary "mean") accumulates in
    float32 and returns float32, which torch's type promotion carries through the rest of
    forward.layer_norm (``x - mean`` is float32) and through the residual sums that feed the
    next LayerNorm; ``to_float`` / ``less_equal`` / ``float_min`` build the mask in float32, so
    ``scores + bias`` and the softmax after it are float32. ``linear`` and ``matmul`` cast their
    float32 operands down to ``dtype`` (torch's matmul refuses mixed dtypes), so every product
    runs in the half dtype with its float32 accumulation inside the kernel. Parameters become
    ``dtype`` tensors (``param``) except where the caller keeps them float32 (``param32``: the
    LayerNorm weights, whose kernel runs in float32).
    """

    def __init__(self, dtype: torch.dtype):
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"HalfTorchOps takes torch.float16 or torch.bfloat16, not {dtype}")
        super().__init__(dtype)

    def param(self, array) -> torch.Tensor:
        # float32 first: widening float16/bfloat16 is exact, so a half checkpoint keeps its values
        return super().param(array).to(self.dtype)

    def param32(self, array) -> torch.Tensor:
        return super().param(array)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().to(torch.float32).cpu().numpy()

    def linear(self, x, weight, bias):
        return torch.nn.functional.linear(x.to(self.dtype), weight, bias)

    def matmul(self, a, b):
        return torch.matmul(a.to(self.dtype), b.to(self.dtype))

    def mean(self, x, axis):
        return torch.mean(x, dim=axis, keepdim=True, dtype=torch.float32)

    def to_float(self, x):
        return x.to(torch.float32)

    def less_equal(self, a, b):
        return torch.le(a, b).to(torch.float32)

    def float_min(self) -> float:
        return float(torch.finfo(torch.float32).min)


#: ``--dtype`` names -> the torch dtype of the half ops
HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def make_ops() -> TorchOps:
    return TorchOps()
