"""Keep the frameworks' start-up noise off the user's terminal (``--verbose`` shows it).

TensorFlow, XLA and JAX write to stderr at import time: absl's "All log messages before
absl::InitializeLog()" line, oneDNN / CUDA / cpu_feature_guard notices and, on a machine
without a GPU, a ``cuInit`` error line. Part of it is C++ writing straight to file descriptor
2 before any log level applies, so environment variables alone cannot silence it.

``Quiet`` therefore (1) sets the frameworks' log levels in the environment before they
import (``setdefault``: a user's own setting wins), (2) points Python's ``sys.stderr`` at a
duplicate of the real stderr, so our messages, progress bars and warnings bypass the filter,
and (3) routes file descriptor 2 (native writes only) through a pipe whose reader thread
drops the known start-up lines and forwards everything else unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

#: environment defaults, set before any framework imports
ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",        # TF C++: errors only once absl is initialised
    "GRPC_VERBOSITY": "ERROR",
    "ABSL_MIN_LOG_LEVEL": "2",
}

#: Python loggers whose start-up messages are not the user's business (JAX probing for a TPU)
NOISY_LOGGERS = ("jax._src.xla_bridge", "absl", "tensorflow", "h5py", "torch._dynamo", "torch._inductor")

#: native stderr lines dropped: absl's pre-init banner, glog-style I/W lines, the cuInit error
#: line of a GPU-less machine, cpu_feature_guard's follow-up line
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    rb"|E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"
    rb")")


class Quiet:
    """Context manager: the noise filter for one CLI call (a no-op with ``verbose``)."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self._saved_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stderr = sys.stderr

    def __enter__(self) -> Quiet:
        if self.verbose:
            return self
        for key, value in ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            if sys.stderr.fileno() != 2:       # stderr is not the process's fd 2 (redirected in-process)
                return self
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
            read_end, write_end = os.pipe()
        except (OSError, ValueError, AttributeError):  # no real fd 2 (pytest capture): env levels only
            self._saved_fd = None
            return self
        os.dup2(write_end, 2)
        os.close(write_end)
        self._stderr = sys.stderr
        sys.stderr = os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=_forward, args=(read_end, self._saved_fd), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._saved_fd is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved_fd, 2)             # closes the pipe's last write end: the reader sees EOF
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            sys.stderr.close()
        except OSError:
            pass
        sys.stderr = self._stderr
        os.close(self._saved_fd)
        self._saved_fd = None


def _forward(read_end: int, target: int) -> None:
    """Copy lines from ``read_end`` to ``target``, dropping NOISE; a partial last line is kept."""
    buffer = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
            if kept:
                _write_all(target, kept)
    if buffer and not NOISE.match(buffer):
        _write_all(target, buffer)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:    # the terminal went away: nothing left to tell
        pass
