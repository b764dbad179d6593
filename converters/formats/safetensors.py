"""HF PyTorch checkpoints: read ``model.safetensors`` (single or sharded) and ``pytorch_model.bin``
(single or sharded); write an HF-loadable folder (config.json + model.safetensors, ``{"format": "pt"}``),
sharded above ``--max-shard-size`` (default 5GB, as ``save_pretrained``) into
``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json`` as transformers shards
(engine/shards.py: huggingface_hub's split, in state-dict order).

Native names are the state-dict keys: the canonical name, with ``electra.`` in front of
backbone tensors in head models (ElectraModel has no prefix). Layout is canonical already
(torch.nn.Linear [out, in]). ``pytorch_model.bin`` stores the tied decoder again; the engine
checks it equals the word embeddings and drops it. It is read by torch_zip.py, without torch:
its restricted unpickler resolves only the globals a state dict of tensors needs, so a file that
needs anything beyond tensors is refused, never executed; each tensor reads only its own bytes.
(A legacy pre-1.6 non-zip file goes to ``torch.load(weights_only=True)``, when torch is installed.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from electra_bridge.schemas import ROWS, Checkpoint, FormatError

from ..engine import shards
from ..engine.format import CheckpointFormat, NativeTensor, find_weights
from ..engine.rules import Ignored, Rule
from . import safetensors_file, torch_zip

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
    state = torch_zip.read(path)
    if not isinstance(state, dict):
        raise FormatError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    out = {}
    for name, t in state.items():
        if not isinstance(t, (torch_zip.ZipTensor, torch_zip.ArrayTensor)):
            raise FormatError(f"{path}: entry {name!r} is a {type(t).__name__}, not a tensor")
        out[name] = NativeTensor(name, tuple(t.shape), t.dtype, t.load)
    return out


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
