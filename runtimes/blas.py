"""Two things numpy does not expose from the OpenBLAS it is linked against: the thread count and the
out-of-place transpose (``cblas_somatcopy``), reached through ctypes.

* ``blas_threads(n)``: the block runs with ``n`` BLAS threads, the count restored afterwards. A
  thread count the user set (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS) is never overridden.
* ``contiguous(arr)``: ``arr`` C-contiguous. A 2-D float32 transposed view (the [in, out] kernels of
  TF1, h5 and msgpack seen as canonical [out, in]) is copied by ``cblas_somatcopy``: bit-identical
  to ``np.ascontiguousarray`` (a copy, no arithmetic) and measured 17-20x faster at electra-base
  shapes (768 x 3072: 18 ms -> 1 ms), where numpy's strided copy runs at ~0.3-0.6 GB/s.

The library is the OpenBLAS mapped into this process (/proc/self/maps, numpy's own first); where
there is none (MKL, macOS, no /proc) both fall back to plain numpy behaviour.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

import numpy as np

#: (prefix of the OpenBLAS symbols, whether its integers are 64-bit) by build, newest first
_BUILDS = (("scipy_openblas_", "scipy_cblas_", "64_"), ("scipy_openblas_", "scipy_cblas_", ""),
           ("openblas_", "cblas_", "64_"), ("openblas_", "cblas_", ""))
_ROW_MAJOR, _TRANS = 101, 112
_api: list | None = None


class _OpenBlas:
    def __init__(self, lib: ctypes.CDLL, threads: str, cblas: str, suffix: str):
        self.set_threads = getattr(lib, f"{threads}set_num_threads{suffix}")
        self.get_threads = getattr(lib, f"{threads}get_num_threads{suffix}")
        self.set_threads.argtypes, self.get_threads.restype = [ctypes.c_int], ctypes.c_int
        self.omatcopy = getattr(lib, f"{cblas}somatcopy{suffix}", None)
        if self.omatcopy is not None:
            n = ctypes.c_int64 if suffix.startswith("64") else ctypes.c_int
            self.omatcopy.argtypes = [ctypes.c_int, ctypes.c_int, n, n, ctypes.c_float, ctypes.c_void_p, n,
                                      ctypes.c_void_p, n]
            self.omatcopy.restype = None


def openblas() -> _OpenBlas | None:
    """numpy's OpenBLAS entry points, or None where there is no OpenBLAS to reach."""
    global _api
    if _api is None:
        _api = [None]
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
                paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line}
        except OSError:
            paths = set()
        for path in sorted(paths, key=lambda p: "numpy" not in p):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            build = next((b for b in _BUILDS if hasattr(lib, f"{b[0]}set_num_threads{b[2]}")), None)
            if build is not None:
                _api = [_OpenBlas(lib, *build)]
                break
    return _api[0]


def _user_set_threads() -> bool:
    return bool(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"))


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` OpenBLAS threads (None, no OpenBLAS, or a thread count the user set in
    the environment: unchanged), restoring the previous count afterwards."""
    api = None if n is None or _user_set_threads() else openblas()
    if api is None:
        yield
        return
    before = api.get_threads()
    api.set_threads(n)
    try:
        yield
    finally:
        api.set_threads(before)


def contiguous(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when C-contiguous, else a C-contiguous copy (same dtype, same values)."""
    arr = np.asarray(arr)
    if arr.flags.c_contiguous:
        return arr
    api = openblas()
    if (api is not None and api.omatcopy is not None and arr.ndim == 2 and arr.dtype == np.dtype(np.float32)
            and arr.T.flags.c_contiguous and arr.size):
        source = arr.T                                    # [cols, rows] as stored
        out = np.empty(arr.shape, dtype=np.float32)
        api.omatcopy(_ROW_MAJOR, _TRANS, source.shape[0], source.shape[1], 1.0, source.ctypes.data,
                     source.shape[1], out.ctypes.data, source.shape[0])
        return out
    return np.ascontiguousarray(arr)
