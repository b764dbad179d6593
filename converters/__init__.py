"""Format converters: one module per format, found through the FORMATS registry.

Every format module has ``NAME``, ``KIND`` ("checkpoint" or "artifact"),
``DESCRIPTION`` and ``detect(path) -> bool``. Checkpoint formats add
``read(path, *, head=None, **options) -> Checkpoint``; every writable format has
``write(ckpt, out_dir, **options) -> list[Path]`` (the API makes it atomic and verifies
it); artifact formats add ``open_runner(path) -> Runner``. Modules import their
framework lazily, so detection and the other formats work without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from electra_bridge.schemas import BridgeError

#: format name -> module. Detection tries them in this order (a folder holding several
#: formats is read as the first one; pass ``--from`` to pick another).
FORMATS: dict[str, str] = {
    "safetensors": "electra_bridge.converters.hf_pytorch",
    "tf1": "electra_bridge.converters.google_tf1",
    "onnx": "electra_bridge.converters.onnx_export",
    "h5": "electra_bridge.converters.hf_h5",
    "msgpack": "electra_bridge.converters.hf_flax",
    "torchscript": "electra_bridge.converters.torchscript_export",
    "torch-export": "electra_bridge.converters.torch_export",
}


def format_module(name: str) -> ModuleType:
    if name not in FORMATS:
        raise BridgeError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[name])


from .api import ConvertResult, VerificationError, convert, detect_format, inspect, open_runner, read, verify, write  # noqa: E402

__all__ = [
    "FORMATS", "ConvertResult", "VerificationError", "convert", "detect_format", "format_module", "inspect",
    "open_runner", "read", "verify", "write",
]
