"""The format contract: what a format module fills in, and nothing the engine has to probe for.

A format is a value. ``CheckpointFormat`` (read and written through the engine's one
pipeline, converters/engine/pipeline.py) holds a container codec, its RULES and IGNORED
tables and the head-model prefix; ``ArtifactFormat`` (exported and run: ONNX, TorchScript,
torch.export) holds an exporter, a runner and an inspector. Optional behaviour is a typed
field whose default does nothing, never an attribute looked up with ``hasattr``.

Native tensor contract: a codec lists ``NativeTensor`` values -- name, shape, dtype known
from the file's header, bytes read only by ``load()`` -- and writes a sequence of them,
loading one at a time, so no pipeline step holds more than one tensor it did not need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from electra_bridge.schemas import HEADS, Checkpoint, ElectraConfig

from .options import Option
from .rules import Ignored, Rule


@dataclass(frozen=True)
class NativeTensor:
    """One tensor as its file stores it: native name, shape and dtype; ``load`` reads its bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Plan:
    """What one read binds: the head and config found, the rules and ignores that apply, and
    the provenance lines the format adds (TF1: net, task, where the config came from)."""

    head: str
    config: ElectraConfig
    rules: tuple[Rule, ...]
    ignored: tuple[Ignored, ...]
    provenance: Mapping[str, str] = field(default_factory=dict)
    #: where the config came from, for the accounting hint
    config_origin: str = "config.json"


@dataclass(frozen=True)
class ReadRequest:
    """What the caller asked of a read: the file found, the native tensors listed, options."""

    weights: Path
    natives: Mapping[str, NativeTensor]
    head: str | None
    config: str | Path | ElectraConfig | None
    options: Mapping[str, object]


class Codec(Protocol):
    """The container: the only code that knows the bytes of a format."""

    def locate(self, path: Path) -> Path | None:
        """The weights file (or shard index) that ``path`` -- a folder or a file -- names, or None."""

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        """Every native tensor of one file (not an index), lazily; raises FormatError on corruption."""

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint, **options) -> list[Path]:
        """Write ``tensors`` (native names, shapes, layout) into folder ``out``, loading one at a time.

        ``options`` are the write options the format declares that were given (``max_shard_size``)."""


def find_weights(path: Path, names: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    """The ``locate`` of a format whose files have fixed names: in a folder, the first of ``names``
    present (a regular file); a file path ending with one of ``suffixes`` is taken as given."""
    if path.is_dir():
        return next((path / n for n in names if (path / n).is_file()), None)
    return path if path.name.endswith(tuple(suffixes)) else None


def _no_check(ckpt: Checkpoint) -> None:
    return None


def _same_config(cfg: ElectraConfig, head: str, source: str) -> ElectraConfig:
    return cfg


def _identity(key: str) -> str:
    return key


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    codec: Codec
    #: canonical <-> native rows (native names without ``head_prefix``)
    rules: tuple[Rule, ...]
    ignored: tuple[Ignored, ...] = ()
    #: the pip extra its reader/writer needs (None: the core install is enough)
    extra: str | None = None
    #: heads a file of this format can hold (written and read)
    heads: tuple[str, ...] = tuple(HEADS)
    options: tuple[Option, ...] = ()
    #: put in front of backbone names by head models (``electra.``); ``base`` files have none
    head_prefix: str = ""
    #: shard index file name (``model.safetensors.index.json``), or None when never sharded
    index_name: str | None = None
    #: index ``weight_map`` key -> native name (h5 keys carry a Keras instance scope)
    index_key: Callable[[str], str] = _identity
    #: the Plan of one read, when the format decides rules from the file (TF1); None: the HF plan
    plan: Callable[[ReadRequest], Plan] | None = None
    #: adjust (and warn about) a config read for ``head`` from ``source``
    read_config: Callable[[ElectraConfig, str, str], ElectraConfig] = _same_config
    #: raise SchemaError when the target framework would compute something else than ``ckpt``
    check_writable: Callable[[Checkpoint], None] = _no_check
    #: the config.json written beside the weights (h5: classifier_dropout nulled)
    write_config: Callable[[ElectraConfig], ElectraConfig] = lambda cfg: cfg
    #: the rules of a write, when they depend on the checkpoint (TF1: net and task names)
    write_rules: Callable[[Checkpoint], tuple[Rule, ...]] | None = None
    #: False: the codec writes the folder's own config and tokenizer files (a keras-hub preset keeps
    #: keras-hub's config.json); True: the engine writes the HF config.json and the assets beside the weights
    writes_hf_files: bool = True
    #: the tokenizer files a read carries, from the weights' folder; None: the HF files found there
    read_assets: Callable[[Path], dict[str, bytes]] | None = None
    #: the runner convert verifies a written folder with, when the target framework computes its own
    #: function (keras-hub: tanh GELU); None: the folder is read back and run through the runtime
    verify_runner: Callable[[Path], object] | None = None
    kind: Literal["checkpoint"] = "checkpoint"

    def detect(self, path: Path) -> bool:
        return self.codec.locate(Path(path)) is not None


@dataclass(frozen=True)
class ArtifactFormat:
    """An export target validated by running it (ONNX, TorchScript, torch.export)."""

    name: str
    extra: str
    detect: Callable[[Path], bool]
    #: write the artifact files into ``out`` (config.json and tokenizer files are the engine's)
    export: Callable[..., list[Path]]
    open_runner: Callable[[Path], object]
    inspect: Callable[[Path], dict]
    heads: tuple[str, ...] = tuple(HEADS)
    options: tuple[Option, ...] = ()
    kind: Literal["artifact"] = "artifact"


Format = CheckpointFormat | ArtifactFormat
