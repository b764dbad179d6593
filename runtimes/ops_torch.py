"""torch ops for runtimes/forward.py: float32 CPU, line-by-line parallel to ops_numpy.

Contracts: parameters become float32 tensors sharing memory with the numpy arrays
(``torch.from_numpy``, no copy when the array already is contiguous float32); inputs
become int64 tensors; every call runs under ``torch.inference_mode``. "gelu" stays the
exact erf form because forward.py spells it out with ``ops.erf``.

The same ops serve the TorchScript and torch.export artifacts (runtimes/torch_module.py):
sizes are read with ``x.shape`` and passed on unchanged, so a tracer records them as
graph values (or torch.export as symbols) instead of freezing the example's numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from .forward import BaseOps

NAME = "torch"


class TorchOps(BaseOps):
    """float32 throughout; erf is torch.erf (exact, never a tanh approximation)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype

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


def make_ops() -> TorchOps:
    return TorchOps()
