"""Format converters on one engine: ``formats/`` holds one module per format (a spec, a name
table and a container codec), ``engine/`` the read and write pipelines they all run
through, ``api`` the Python API the CLI mirrors. Formats import their framework lazily,
so detection and the other formats work without it.
"""

from __future__ import annotations

from .api import ConvertResult, VerificationError, convert, detect_format, inspect, open_runner, read, verify, write
from .formats import FORMATS, all_formats, get_format

__all__ = [
    "FORMATS", "ConvertResult", "VerificationError", "all_formats", "convert", "detect_format", "get_format",
    "inspect", "open_runner", "read", "verify", "write",
]
