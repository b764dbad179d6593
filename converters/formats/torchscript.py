"""TorchScript artifact: a folder with ``model.pt`` (torch.jit) + config.json + tokenizer assets.

``model.pt`` is a trace of runtimes/torch_module.ElectraModule (the shared forward pass
with torch ops), after runtimes/torch_fuse swapped forward.py's LayerNorm, softmax and
GELU blocks for torch's fused kernels (same math; checked against the unfused module). Sizes are read from the inputs inside the graph, so the file accepts
any batch size and sequence length up to max_position_embeddings; ``write`` checks this
by running the trace at a shape other than the example one. Parameters keep their
canonical names (``state_dict()``), float32, dense kernels [out, in]; a tied MLM decoder
is the word-embedding table itself (one storage in the file).

Load it anywhere with torch alone::

    m = torch.jit.load("out/model.pt")
    out = m(input_ids, attention_mask, token_type_ids)   # int64 [B, S]; dict of tensors
    out["logits"]

This module also holds what both torch artifact formats share (detection, the folder
layout, inspect); converters/torch_export.py reuses it.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

from electra_bridge.runtimes.torch_artifacts import LOADERS, META_NAME, TorchArtifactRunner, import_torch, metadata
from electra_bridge.schemas import Checkpoint, FormatError, SchemaError

from . import assets

log = logging.getLogger(__name__)

NAME = "torchscript"
KIND = "artifact"
DESCRIPTION = "TorchScript model.pt (torch.jit.load, dynamic batch/sequence) + config.json + tokenizer files"
FILE = "model.pt"

#: the example shape used to trace/export: sizes >= 2 (torch.export specializes 0/1), short for speed
EXAMPLE = {"batch": 2, "seq": 8, "choices": 2}


# ---- shared by both torch artifact formats -----------------------------------------------------

def artifact_file(path: Path, file_name: str) -> Path | None:
    """The artifact file of a folder (or the file itself) when it carries our metadata record."""
    path = Path(path)
    target = path / file_name if path.is_dir() else path
    if target.name != file_name and target.suffix != Path(file_name).suffix:
        return None
    if not target.is_file() or not zipfile.is_zipfile(target):
        return None
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    return target if any(n.endswith(f"/extra/{META_NAME}") for n in names) else None


def check_dynamic(saved, module, ckpt: Checkpoint, fmt: str) -> None:
    """Run ``saved`` and the eager module at a shape unlike the example (batch 1, longer
    sequence); a trace or export that froze the example's sizes fails here, not in serving."""
    import numpy as np

    from electra_bridge.runtimes.torch_module import example_inputs

    torch = import_torch()
    seq = min(EXAMPLE["seq"] + 5, ckpt.config.max_position_embeddings)
    args = example_inputs(ckpt.config, ckpt.head, batch=1, seq=seq, choices=EXAMPLE["choices"] + 1)
    with torch.no_grad():
        try:
            got = saved(*args)
        except RuntimeError as exc:
            raise FormatError(f"the {fmt} artifact does not accept a new input shape: {str(exc).splitlines()[0]}") from exc
        want = module(*args)
    for name, ref in want.items():
        if tuple(got[name].shape) != tuple(ref.shape):
            raise FormatError(f"the {fmt} artifact froze a shape: {name} is {tuple(got[name].shape)}, "
                              f"expected {tuple(ref.shape)}")
        err = float(np.max(np.abs(got[name].numpy() - ref.numpy()), initial=0.0))
        if not err <= 1e-5:
            raise FormatError(f"the {fmt} artifact differs from the eager module on {name} (max-abs {err:.2e})")


def write_folder_files(ckpt: Checkpoint, out: Path) -> list[Path]:
    """config.json and the tokenizer assets beside the artifact."""
    (out / "config.json").write_text(ckpt.config.for_head(ckpt.head).to_json())
    return [out / "config.json", *assets.write(out, ckpt.assets)]


def inspect_artifact(path: Path, fmt: str, file_name: str) -> dict:
    """Head, config, inputs/outputs, parameters (name, shape, dtype) and distinct storages."""
    target = artifact_file(path, file_name)
    if target is None:
        raise FormatError(f"{path}: no electra-bridge {file_name} found")
    module, meta = LOADERS[fmt](target)
    state = module.state_dict()
    storages = {t.untyped_storage().data_ptr() for t in state.values()}
    folder = target.parent
    return {
        "head": meta["head"],
        "config": meta["config"].to_dict(),
        "file": target.name,
        "file_bytes": target.stat().st_size,
        "inputs": meta["inputs"],
        "input_dtype": meta["input_dtype"],
        "outputs": meta["outputs"],
        "torch_version": meta.get("torch_version"),
        "num_parameters": int(sum(t.numel() for t in state.values())),
        "distinct_storages": len(storages),
        "tensors": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for n, t in sorted(state.items())],
        "assets": sorted(n for n in assets.ASSET_NAMES if (folder / n).is_file()),
    }


# ---- the format-module protocol -------------------------------------------------------------------

def detect(path: Path) -> bool:
    return artifact_file(Path(path), FILE) is not None


def write(ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Trace ``ckpt`` into ``out/model.pt`` (+ config.json, assets)."""
    if options:
        raise SchemaError(f"the {NAME} writer takes no options ({', '.join(options)} given)")
    torch = import_torch()
    from electra_bridge.runtimes.torch_fuse import fuse
    from electra_bridge.runtimes.torch_module import example_inputs, from_checkpoint

    module = from_checkpoint(ckpt)       # eager reference; check_dynamic compares against it
    graph = fuse(module, module._ops)    # same math, fused LayerNorm/softmax/GELU kernels
    args = example_inputs(ckpt.config, ckpt.head, **EXAMPLE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*deprecated")
        # strict=False: the output is a dict; check_trace off because check_dynamic below
        # compares at a *different* shape, which is the check that matters.
        traced = torch.jit.trace(graph, args, strict=False, check_trace=False)
    check_dynamic(traced, module, ckpt, NAME)
    meta = metadata(NAME, ckpt.config.for_head(ckpt.head), ckpt.head, module.output_names)
    torch.jit.save(traced, str(out / FILE), _extra_files={META_NAME: meta})
    log.debug("traced %s into %s", ckpt.head, FILE)
    return [out / FILE, *write_folder_files(ckpt, out)]


def open_runner(path: Path) -> TorchArtifactRunner:
    target = artifact_file(Path(path), FILE)
    if target is None:
        raise FormatError(f"{path}: no electra-bridge TorchScript {FILE} found")
    return TorchArtifactRunner(target, NAME, name=str(path))


def inspect(path: Path) -> dict:
    return inspect_artifact(Path(path), NAME, FILE)
