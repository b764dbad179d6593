"""HF PyTorch checkpoints: read model.safetensors (single or sharded) and pytorch_model.bin;
write an HF-loadable folder (config.json + model.safetensors with {"format": "pt"}).

Native names are the state-dict keys: the canonical name, with ``electra.`` in front of
backbone tensors in head models (ElectraModel has no prefix). Layout is canonical
already (torch.nn.Linear [out, in]). ``pytorch_model.bin`` is opened only with
``torch.load(weights_only=True)``: a file that needs anything beyond tensors is refused,
never executed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from electra_bridge.schemas import (
    ARCHITECTURE_TO_HEAD, TIES, Checkpoint, ElectraConfig, FormatError, MissingDependencyError,
    SchemaError, detect_head, expected_shapes, get_head,
)
from electra_bridge.schemas.tensors import BACKBONE_GROUPS, ROWS

from . import assets, safetensors_io
from .rules import Ignored, Rule, account, bind

log = logging.getLogger(__name__)

NAME = "safetensors"
KIND = "checkpoint"
DESCRIPTION = "HF PyTorch: model.safetensors (sharded or not) or pytorch_model.bin, with config.json"

SAFE, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE, SAFE_INDEX, BIN, BIN_INDEX)
PREFIX = "electra."

#: Names are canonical after the model prefix is removed; the layout is canonical.
RULES = tuple(Rule(row.template, row.template) for row in ROWS)

IGNORED = (
    Ignored("embeddings.position_ids", "non-persistent arange buffer that older transformers versions saved"),
    Ignored("embeddings.token_type_ids", "non-persistent zeros buffer, not a parameter"),
)


# ---- detection ----------------------------------------------------------------------------------

def _weights_file(path: Path) -> Path | None:
    if path.is_dir():
        return next((path / f for f in WEIGHT_FILES if (path / f).exists()), None)
    if path.name.endswith((".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")):
        return path
    return None


def detect(path: Path) -> bool:
    return _weights_file(Path(path)) is not None


# ---- reading ------------------------------------------------------------------------------------

def _load_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import pickle

        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading {path.name} needs PyTorch: pip install 'electra-bridge[torch]' (or convert from model.safetensors)"
        ) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "Unsupported global" in line or "GLOBAL" in line), first[0] if first else "")
        raise FormatError(
            f"refusing {path}: it contains pickled objects other than tensors ({detail.strip()}). "
            "electra-bridge opens pytorch_model.bin only with torch.load(weights_only=True) and never runs pickled code; "
            "re-save the weights as safetensors from a trusted environment"
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise FormatError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise FormatError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    out = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise FormatError(f"{path}: entry {name!r} is a {type(t).__name__}, not a tensor")
        out[name] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return out


def _load_index(path: Path) -> dict:
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not a valid shard index ({exc})") from exc
    return weight_map


def _native_tensors(weights: Path) -> dict[str, object]:
    """Native name -> LazyTensor or array, across shards."""
    if weights.name.endswith(".index.json"):
        weight_map = _load_index(weights)
        out: dict[str, object] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = weights.parent / shard
            if not shard_path.exists():
                raise FormatError(f"{weights.name} names shard {shard}, which is missing")
            part = _native_tensors(shard_path)
            out.update({k: v for k, v in part.items() if weight_map.get(k) == shard})
        absent = sorted(set(weight_map) - set(out))
        if absent:
            raise FormatError(f"{weights.name} lists tensors no shard holds: {', '.join(absent[:8])}")
        return out
    if weights.suffix == ".bin":
        return _load_bin(weights)
    return safetensors_io.SafetensorsFile(weights).tensors()


def read(path: str | Path, *, head: str | None = None, config: str | Path | ElectraConfig | None = None) -> Checkpoint:
    """Read an HF PyTorch checkpoint (folder or weights file) into a canonical Checkpoint.

    The head comes from config.json ``architectures`` (else from the tensors present);
    ``head`` may narrow it to a subset (e.g. ``base`` from any head model).
    """
    path = Path(path)
    weights = _weights_file(path)
    if weights is None or not weights.exists():
        raise FormatError(f"{path}: no {', '.join(WEIGHT_FILES)} found")
    cfg = assets.config_for(weights, config)
    native = _native_tensors(weights)

    prefixed = any(n.startswith(PREFIX) for n in native)
    canonical = {(n[len(PREFIX):] if prefixed and n.startswith(PREFIX) else n): t for n, t in native.items()}
    own_head = next((ARCHITECTURE_TO_HEAD[a] for a in cfg.architectures if a in ARCHITECTURE_TO_HEAD), None)
    own_head = own_head or detect_head(set(canonical), cfg)

    for alias, target in TIES.items():  # a tied alias (pytorch_model.bin stores it) must equal its target
        if alias in canonical and cfg.tie_word_embeddings:
            if target in canonical and not np.array_equal(np.asarray(canonical[alias]), np.asarray(canonical[target])):
                raise SchemaError(f"{weights}: {alias} should be tied to {target} (tie_word_embeddings is true) "
                                  "but the two differ; set tie_word_embeddings=false in config.json if it is untied")
            del canonical[alias]

    cfg = cfg.for_head(own_head)
    bindings = bind(RULES, cfg, own_head)
    account(bindings, {n: tuple(t.shape) for n, t in canonical.items()}, IGNORED, source=str(weights),
            hint="check that config.json describes this file (sizes, num_labels, architectures)")
    tensors = {c: canonical[b.native] for c, b in bindings.items()}
    ckpt = Checkpoint(cfg, own_head, tensors, assets.collect(weights.parent),
                      {"format": NAME, "path": str(path), "file": weights.name})
    ckpt.validate(str(weights))
    return ckpt.as_head(head) if head and head != own_head else ckpt


# ---- writing ------------------------------------------------------------------------------------

def native_names(ckpt: Checkpoint) -> dict[str, str]:
    """Canonical -> state-dict key for this checkpoint's head."""
    backbone = set(expected_shapes(ckpt.config, BACKBONE_GROUPS))
    prefix = "" if ckpt.head == "base" else PREFIX
    return {n: (prefix + n if n in backbone else n) for n in ckpt.tensors}


def write(ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Write ``out/config.json`` + ``out/model.safetensors`` (+ assets) as transformers saves them.

    The tied decoder (generator_lm_head.weight) is omitted like save_pretrained does;
    transformers re-ties it on load. An untied model keeps it and says so in config.json.
    """
    if options:
        raise SchemaError(f"the safetensors writer takes no options ({', '.join(options)} given)")
    get_head(ckpt.head)
    names = native_names(ckpt)
    safetensors_io.write(out / SAFE, {names[n]: t for n, t in ckpt.tensors.items()}, {"format": "pt"})
    (out / "config.json").write_text(ckpt.config.for_head(ckpt.head).to_json())
    return [out / SAFE, out / "config.json", *assets.write(out, ckpt.assets)]
