"""The format registry: one line per format, name -> module. Each module defines ``FORMAT``, a
``CheckpointFormat`` or ``ArtifactFormat`` (converters/engine/format.py).

Modules import their framework lazily, so listing formats and detecting files works
without it. Detection tries formats in this order (a folder holding several formats is
read as the first one; pass ``--from`` to pick another).
"""

from __future__ import annotations

import importlib
from functools import cache

from electra_bridge.schemas import BridgeError

from ..engine.format import Format

FORMATS: dict[str, str] = {
    "safetensors": "electra_bridge.converters.formats.safetensors",
    "tf1": "electra_bridge.converters.formats.tf1",
    "onnx": "electra_bridge.converters.formats.onnx",
    "h5": "electra_bridge.converters.formats.h5",
    "msgpack": "electra_bridge.converters.formats.msgpack",
    "torchscript": "electra_bridge.converters.formats.torchscript",
    "torch-export": "electra_bridge.converters.formats.torch_export",
    "keras": "electra_bridge.converters.formats.keras",
    "keras-hub": "electra_bridge.converters.formats.keras_hub",
}


@cache
def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise BridgeError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    fmt = importlib.import_module(FORMATS[name]).FORMAT
    if fmt.name != name:
        raise BridgeError(f"format module {FORMATS[name]} declares {fmt.name!r}, registered as {name!r}")
    return fmt


def all_formats() -> list[Format]:
    return [get_format(name) for name in FORMATS]
