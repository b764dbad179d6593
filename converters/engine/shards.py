"""Shard indexes (``*.index.json`` with a ``weight_map``), one implementation for every format.

transformers' ``save_pretrained(max_shard_size=...)`` writes ``<weights>.index.json``:
``{"metadata": {...}, "weight_map": {key: shard file name}}``. Every shard must be a plain
file name inside the index's folder (no ``..``, no absolute path, no symlink out), every
key must be held by exactly the shard the index names, and no shard may hold a tensor twice
or a tensor another shard holds too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from electra_bridge.schemas import FormatError

from .files import confined, read_small
from .format import NativeTensor


def is_index(path: Path) -> bool:
    return path.name.endswith(".index.json")


def weight_map(index: Path) -> dict[str, Path]:
    """key -> shard path, each shard confined to the index's folder."""
    try:
        data = json.loads(read_small(index).decode("utf-8"))
        mapping = data["weight_map"]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{index} is not a valid shard index ({type(exc).__name__}: {exc})") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise FormatError(f"{index}: weight_map must map tensor names to shard file names")
    folder = index.parent.resolve()
    out: dict[str, Path] = {}
    for key, shard in mapping.items():
        path = index.parent / shard
        if Path(shard).name != shard or path.resolve().parent != folder:
            raise FormatError(f"{index}: shard {shard!r} is not a file name inside {index.parent}; "
                              "electra-bridge reads only files inside the checkpoint's folder")
        out[key] = path
    return out


def list_sharded(index: Path, list_file: Callable[[Path], Mapping[str, NativeTensor]],
                 index_key: Callable[[str], str]) -> dict[str, NativeTensor]:
    """Every native tensor of an index's shards, each from the shard the index names."""
    promised = {index_key(key): shard for key, shard in weight_map(index).items()}
    folder = index.parent.resolve()
    found: dict[str, NativeTensor] = {}
    for shard in sorted(set(promised.values())):
        if not shard.exists():
            raise FormatError(f"{index.name} names shard {shard.name}, which is missing")
        confined(shard, folder, "shard")
        for name, tensor in list_file(shard).items():
            if name in found:
                raise FormatError(f"{index.name}: {name} is stored in two shards ({shard.name} and another)")
            if promised.get(name) != shard:
                where = promised[name].name if name in promised else "no shard"
                raise FormatError(f"{shard}: holds {name}, which {index.name} assigns to {where}")
            found[name] = tensor
    absent = sorted(set(promised) - set(found))
    if absent:
        raise FormatError(f"{index.name} lists tensors no shard holds: {', '.join(absent[:8])}")
    return found
