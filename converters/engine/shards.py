"""Shard indexes (``*.index.json`` with a ``weight_map``), read and written, one implementation for every format.

transformers' ``save_pretrained(max_shard_size=...)`` writes ``<weights>.index.json``:
``{"metadata": {...}, "weight_map": {key: shard file name}}``. Every shard must be a plain
file name inside the index's folder (no ``..``, no absolute path, no symlink out), every
key must be held by exactly the shard the index names, and no shard may hold a tensor twice
or a tensor another shard holds too.

Writing (``--max-shard-size``) splits as the installed transformers 4.57 does, so file names
and index equal its own for the same model and size:

* PyTorch (safetensors): huggingface_hub's ``split_torch_state_dict_into_shards`` (HUB): in
  state-dict order, a tensor above the limit gets a shard of its own (appended at once, the
  open shard stays open), otherwise the open shard is closed when the tensor would tip it over;
* TF and Flax: ``tf_shard_checkpoint`` / ``flax_shard_checkpoint`` (LEGACY): the open shard is
  closed whenever the next tensor would tip it over -- even when it is empty, so a first tensor
  above the limit leaves an empty first shard, which transformers writes too and no index key names.

Sizes are ``prod(shape) x itemsize`` (no file overhead). Shard ``i`` of ``n`` of ``model.safetensors``
is ``model-0000i-of-0000n.safetensors``; a split into one shard writes the plain file and no index.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from electra_bridge.schemas import FormatError, SchemaError

from .files import confined, read_small, within
from .format import NativeTensor
from .options import Option

HUB, LEGACY = "hub", "legacy"

MAX_SHARD_SIZE = Option(
    "--max-shard-size", "write",
    "split the weights into shards of at most SIZE bytes with the index transformers writes (SIZE: 5GB, "
    "200MB, 10KB, 1GiB, or plain bytes; KB=1000, KiB=1024, as transformers parses it); default as "
    "transformers' save_pretrained: 5GB for safetensors and h5, 10GB for msgpack",
    {"metavar": "SIZE"})

_SIZE = re.compile(r"(\d+)(GIB|MIB|KIB|GB|MB|KB)?", re.IGNORECASE)
_UNITS = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}


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
        # "" names the folder itself, which ``within`` accepts (it is no shard file)
        if not shard or Path(shard).name != shard or not within(path, folder):
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


# ---- writing ------------------------------------------------------------------------------------

def parse_size(value: int | str) -> int:
    """Bytes of a ``--max-shard-size``: transformers' ``convert_file_size_to_int`` (``5GB`` = 5*10**9,
    ``5GiB`` = 5*2**30; a lower-case ``b`` -- ``5Gb`` -- means bits, as there), plus plain bytes ("1000")."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        size = int(value)
    else:
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise SchemaError(f"--max-shard-size {value!r}: give digits and a unit (5GB, 200MB, 10KB, 1GiB) or a "
                              "number of bytes")
        digits, unit = match.groups()
        size = int(digits) * _UNITS[unit.upper()] if unit else int(digits)
        if unit and unit[-1] == "b" and not unit.upper().endswith("IB"):
            size //= 8   # transformers: "Gb", "Mb", "Kb" are bits
    if size <= 0:
        raise SchemaError(f"--max-shard-size {value!r}: a shard must hold at least one byte")
    return size


def nbytes(tensor: NativeTensor) -> int:
    return math.prod(int(d) for d in tensor.shape) * np.dtype(tensor.dtype).itemsize


def split(tensors: Sequence[NativeTensor], max_size: int, rule: str) -> list[list[NativeTensor]]:
    """The shards of ``tensors`` (in the framework's order) under ``rule`` (HUB or LEGACY; module docstring)."""
    shards: list[list[NativeTensor]] = []
    current: list[NativeTensor] = []
    size = 0
    for t in tensors:
        n = nbytes(t)
        if rule == HUB and n > max_size:
            shards.append([t])
            continue
        if size + n > max_size and (current or rule == LEGACY):
            shards.append(current)
            current, size = [], 0
        current.append(t)
        size += n
    if current or rule == LEGACY:
        shards.append(current)
    return shards


def shard_name(weights: str, i: int, n: int) -> str:
    """``model.safetensors`` -> ``model-00001-of-00003.safetensors`` (the suffix after the first dot kept)."""
    stem, dot, suffix = weights.partition(".")
    return f"{stem}-{i + 1:05d}-of-{n:05d}{dot}{suffix}"


def model_order(tensors: Sequence[NativeTensor], is_backbone: Callable[[str], bool], layer: re.Pattern,
                first: Sequence[str] = ()) -> list[NativeTensor]:
    """Module order (PyTorch's state dict, Keras' ``model.weights``) from the engine's rules order:
    the backbone first -- embeddings, then layer by layer -- then the head; within each, names
    starting with one of ``first`` (in that order) lead, the rest keep rules order."""
    def key(t: NativeTensor) -> tuple[int, int, int]:
        match = layer.search(t.name)
        rank = next((i for i, prefix in enumerate(first) if t.name.startswith(prefix)), len(first))
        return (0 if is_backbone(t.name) else 1, int(match.group(1)) if match else -1, rank)
    return sorted(tensors, key=key)


def write_sharded(out: Path, weights: str, index: str, tensors: Sequence[NativeTensor], max_size: int, rule: str,
                  write_file: Callable[[Path, list[NativeTensor]], None], *,
                  index_key: Callable[[str], str] = lambda name: name,
                  metadata: Mapping[str, object] | None = None) -> list[Path]:
    """Write ``tensors`` (framework order) as ``weights`` or, above ``max_size``, as its shards and ``index``.

    ``write_file(path, tensors)`` writes one file, loading its tensors one at a time; the index is
    ``json.dumps(indent=2, sort_keys=True) + "\\n"`` of ``{"metadata": {"total_size", **metadata},
    "weight_map": {index_key(name): shard}}``, byte for byte what transformers writes."""
    groups = split(tensors, max_size, rule)
    if len(groups) == 1:
        write_file(out / weights, groups[0])
        return [out / weights]
    names = [shard_name(weights, i, len(groups)) for i in range(len(groups))]
    for name, group in zip(names, groups):
        write_file(out / name, group)
    record = {"metadata": {**(metadata or {}), "total_size": sum(nbytes(t) for t in tensors)},
              "weight_map": {index_key(t.name): name for name, group in zip(names, groups) for t in group}}
    (out / index).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [out / index, *(out / name for name in names)]
