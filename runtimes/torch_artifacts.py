"""Runners for the saved torch artifacts: TorchScript ``model.pt`` and torch.export ``model.pt2``.

Both artifacts take ``(input_ids, attention_mask, token_type_ids)`` positionally, int64,
[B, S] ([B, K, S] for multiple-choice), and return a dict of float32 tensors: the head's
outputs (transformers names) and ``hidden_states.0..L``. Each file carries a small JSON
record (``electra_bridge.json``, stored inside the archive as an extra file) with the
head, the config and the input/output names, so a lone file still says what it is.
Loading needs only torch: no electra_bridge code is referenced by the artifacts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from electra_bridge.schemas import ElectraConfig, FormatError, MissingDependencyError, SchemaError, get_head

from .forward import Result

log = logging.getLogger(__name__)

META_NAME = "electra_bridge.json"


#: artifact call convention, shared with runtimes/torch_module.py (kept here: this module must not import torch)
HIDDEN_PREFIX = "hidden_states."
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch artifacts need PyTorch: pip install 'electra-bridge[torch]'") from exc
    return torch


def metadata(fmt: str, cfg: ElectraConfig, head: str, output_names: tuple[str, ...]) -> str:
    """The JSON record stored inside an artifact."""
    torch = import_torch()
    return json.dumps({"format": fmt, "head": head, "inputs": list(INPUT_NAMES), "input_dtype": "int64",
                       "outputs": list(output_names), "dtype": "float32", "torch_version": torch.__version__,
                       "config": cfg.to_dict()}, indent=2)


def parse_metadata(raw: str | bytes, path: Path) -> dict:
    try:
        meta = json.loads(raw)
        get_head(meta["head"])
        meta["config"] = ElectraConfig.from_dict(meta["config"])
    except (ValueError, KeyError, TypeError, SchemaError) as exc:
        raise FormatError(f"{path}: the embedded {META_NAME} is missing or unreadable ({exc}); "
                          "this file was not written by electra-bridge") from exc
    return meta


def load_torchscript(path: Path):
    """(callable module, metadata) of a TorchScript file."""
    torch = import_torch()
    extra = {META_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise FormatError(f"{path} is not a loadable TorchScript file: {str(exc).splitlines()[0]}") from exc
    return module.eval(), parse_metadata(extra[META_NAME], path)


def load_torch_export(path: Path):
    """(callable module, metadata) of a torch.export ``.pt2`` file."""
    torch = import_torch()
    extra = {META_NAME: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise FormatError(f"{path} is not a loadable torch.export program: {str(exc).splitlines()[0]}") from exc
    return program.module(), parse_metadata(extra[META_NAME], path)


LOADERS = {"torchscript": load_torchscript, "torch-export": load_torch_export}


class TorchArtifactRunner:
    """Runs a saved torch artifact; ``runtime`` is "torchscript" or "torch-export" (tolerance rows)."""

    dtype = "float32"

    def __init__(self, path: str | Path, runtime: str, name: str | None = None):
        if runtime not in LOADERS:
            raise SchemaError(f"unknown torch artifact runtime {runtime!r}; choose one of: {', '.join(LOADERS)}")
        self.path, self.runtime = Path(path), runtime
        self._module, meta = LOADERS[runtime](self.path)
        self.config: ElectraConfig = meta["config"]
        self.head: str = meta["head"]
        self.heads = (self.head,)
        self.output_names: tuple[str, ...] = tuple(meta["outputs"])
        self.name = name or str(path)

    def release(self) -> None:
        self._module = None

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        torch = import_torch()
        if head != self.head:
            raise SchemaError(f"{self.name} is a {self.head} artifact; it cannot run {head!r}")
        if self._module is None:
            self._module = LOADERS[self.runtime](self.path)[0]
        args = [torch.from_numpy(np.ascontiguousarray(batch[k], dtype=np.int64)) for k in INPUT_NAMES]
        with torch.no_grad():
            out = self._module(*args)
        arrays = {k: v.detach().numpy() for k, v in out.items()}
        wanted = get_head(head).output_names
        missing = [k for k in wanted if k not in arrays]
        if missing:
            raise FormatError(f"{self.name} returned {', '.join(arrays)}; expected {', '.join(wanted)}")
        states = tuple(arrays[k] for k in sorted((k for k in arrays if k.startswith(HIDDEN_PREFIX)),
                                                 key=lambda k: int(k[len(HIDDEN_PREFIX):])))
        return Result({k: arrays[k] for k in wanted}, states)
