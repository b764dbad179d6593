"""HF PyTorch checkpoints: read ``model.safetensors`` (single or sharded) and ``pytorch_model.bin``
(single or sharded); write an HF-loadable folder (config.json + model.safetensors, ``{"format": "pt"}``),
sharded above ``--max-shard-size`` (default 5GB, as ``save_pretrained``) into
``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json`` as transformers shards
(engine/shards.py: huggingface_hub's split, in state-dict order).

Native names are the state-dict keys: the canonical name, with ``electra.`` in front of
backbone tensors in head models (ElectraModel has no prefix). Layout is canonical already
(torch.nn.Linear [out, in]). ``pytorch_model.bin`` stores the tied decoder again; the engine
checks it equals the word embeddings and drops it. It is opened only with
``torch.load(weights_only=True)``: a file that needs anything beyond tensors is refused,
never executed.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

from electra_bridge.schemas import ROWS, Checkpoint, FormatError, MissingDependencyError

from ..engine import shards
from ..engine.format import CheckpointFormat, NativeTensor, find_weights
from ..engine.rules import Ignored, Rule
from . import safetensors_file

SAFE, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE, SAFE_INDEX, BIN, BIN_INDEX)
#: PreTrainedModel.save_pretrained's max_shard_size default (transformers 4.57)
DEFAULT_MAX_SHARD_SIZE = "5GB"
PREFIX = "electra."
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")
#: ElectraGeneratorPredictions registers its LayerNorm before its dense (rules order has dense first)
_STATE_DICT_FIRST = ("generator_predictions.LayerNorm.",)

#: Names are canonical after the model prefix is removed; the layout is canonical.
RULES = tuple(Rule(row.template, row.template) for row in ROWS)

IGNORED = (
    Ignored("embeddings.position_ids", "non-persistent arange buffer that older transformers versions saved"),
    Ignored("embeddings.token_type_ids", "non-persistent zeros buffer, not a parameter"),
)


def _load_bin(path: Path) -> dict[str, NativeTensor]:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading {path.name} needs PyTorch: pip install 'electra-bridge[torch]' (or convert from model.safetensors)"
        ) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((line for line in lines if "Unsupported global" in line or "GLOBAL" in line), lines[0] if lines else "")
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
        out[name] = NativeTensor(name, tuple(t.shape), _dtype(t), lambda t=t: _to_numpy(t))
    return out


def _dtype(t):
    return _to_numpy(t.reshape(-1)[:0]).dtype


def _to_numpy(t):
    import ml_dtypes
    import torch

    if t.dtype == torch.bfloat16:   # numpy has no bfloat16: reinterpret the bits through ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class SafetensorsCodec:
    def locate(self, path: Path) -> Path | None:
        return find_weights(path, WEIGHT_FILES, (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"))

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        if weights.suffix == ".bin":
            return _load_bin(weights)
        return safetensors_file.SafetensorsFile(weights).tensors()

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint,
              max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> list[Path]:
        """``model.safetensors`` (or its shards and index) as save_pretrained writes it; the tied decoder
        is omitted (transformers re-ties it on load), an untied one is kept and config.json says so.

        The index metadata holds ``total_parameters`` (``num_parameters()``: the elements written, the
        tied decoder counted once) and ``total_size`` (their bytes)."""
        def backbone(name: str) -> bool:
            return ckpt.head == "base" or name.startswith(PREFIX)
        ordered = shards.model_order(tensors, backbone, _LAYER, _STATE_DICT_FIRST)
        return shards.write_sharded(
            out, SAFE, SAFE_INDEX, ordered, shards.parse_size(max_shard_size), shards.HUB,
            lambda path, group: safetensors_file.write(path, group, {"format": "pt"}),
            metadata={"total_parameters": sum(math.prod(t.shape) for t in tensors)})


FORMAT = CheckpointFormat(
    name="safetensors",
    codec=SafetensorsCodec(),
    rules=RULES,
    ignored=IGNORED,
    options=(shards.MAX_SHARD_SIZE,),
    head_prefix=PREFIX,
    index_name=SAFE_INDEX,
)
