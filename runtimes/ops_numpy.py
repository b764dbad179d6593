"""numpy ops for runtimes/forward.py: the float32 reference runtime (no framework needed).

Threads: a run of at most ``SMALL_RUN_TOKENS`` tokens (the probe batch has 33) computes with one
BLAS thread. Its GEMMs are thin ([tokens, in] x [in, out]) and short, so a second OpenBLAS thread
saves little on a quiet machine and, on a shared one, costs a lot: OpenBLAS threads spin-wait for
each other, and a waiter whose core another process holds stalls every GEMM (measured at
electra-base, probe batch, 2 cores under load ~5: 2.1-4.7 s with 2 threads, 0.20 s with one).
Larger runs keep the library's thread count; an explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS
is always left alone (the user chose it). Both through runtimes/blas.py, as is ``param``'s copy of
a transposed kernel view (OpenBLAS's omatcopy, ~18x numpy's strided copy).
"""

from __future__ import annotations

import numpy as np

from electra_bridge.schemas import materialize

from .blas import blas_threads, contiguous
from .erf import erf as _erf
from .forward import BaseOps

NAME = "numpy"


class NumpyOps(BaseOps):
    """float32 throughout; GELU's erf is computed in float64 (runtimes/erf.py; never a tanh approximation)."""

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)

    def param(self, array) -> np.ndarray:
        # loaded first, then cast only if needed: np.asarray(lazy, dtype=...) goes through LazyTensor.__array__,
        # whose astype always copies -- a second copy of every weight, the one convert's Retained arrays avoid
        return contiguous(np.asarray(materialize(array)).astype(self.dtype, copy=False))

    def inputs(self, array) -> np.ndarray:
        return np.asarray(array, dtype=np.int64)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    matmul = staticmethod(np.matmul)
    transpose = staticmethod(np.transpose)
    reshape = staticmethod(np.reshape)
    exp = staticmethod(np.exp)
    tanh = staticmethod(np.tanh)
    sqrt = staticmethod(np.sqrt)
    maximum = staticmethod(np.maximum)

    def linear(self, x, weight, bias):
        # np.matmul of a [B, S, in] batch against a transposed view loops over the batch outside BLAS;
        # one 2-D GEMM over the flattened rows is the same sum per element (same order) and 5-10x faster.
        rows = x.reshape(-1, x.shape[-1]) @ weight.T
        rows += bias
        return rows.reshape(*x.shape[:-1], weight.shape[0])

    def shape(self, x):
        return x.shape

    def compile(self, fn):
        """``fn`` run with one BLAS thread when its batch is small (see the module docstring)."""
        def run(params, batch):
            tokens = int(np.size(batch["input_ids"]))
            with blas_threads(1 if tokens <= SMALL_RUN_TOKENS else None):
                return fn(params, batch)
        return run

    def take(self, table, ids):
        return np.take(table, ids, axis=0)

    erf = staticmethod(_erf)

    def mean(self, x, axis):
        return np.mean(x, axis=axis, keepdims=True, dtype=x.dtype)

    def max(self, x, axis):
        return np.max(x, axis=axis, keepdims=True)

    def sum(self, x, axis):
        return np.sum(x, axis=axis, keepdims=True, dtype=x.dtype)

    def to_float(self, x):
        return np.asarray(x).astype(self.dtype)

    def arange(self, n):
        return np.arange(n, dtype=np.int64)

    def less_equal(self, a, b):
        return (a <= b).astype(self.dtype)

    def float_min(self):
        return float(np.finfo(self.dtype).min)


#: runs of at most this many tokens (batch x sequence) use one BLAS thread
SMALL_RUN_TOKENS = 256


def make_ops() -> NumpyOps:
    return NumpyOps()
