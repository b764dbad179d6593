"""torch.export artifact: a folder with ``model.pt2`` (torch.export.save) + config.json + assets.

The program is exported from runtimes/torch_module.ElectraModule with symbolic batch
and sequence dims (and choices for multiple-choice), declared with ``torch.export.Dim``.
torch.export specializes any dim whose example size is 0 or 1, so the example inputs
are 2 x 8 (x 2 choices) and the dims have ``min=1``; ``write`` then runs batch 1 and a
longer sequence to prove the program is not frozen. The sequence dim is bounded by
max_position_embeddings (positions beyond it do not exist).

Load it anywhere with torch alone::

    program = torch.export.load("out/model.pt2")
    out = program.module()(input_ids, attention_mask, token_type_ids)   # dict of tensors
"""

from __future__ import annotations

import logging
from pathlib import Path

from electra_bridge.runtimes.torch_artifacts import META_NAME, TorchArtifactRunner, import_torch, metadata
from electra_bridge.schemas import Checkpoint, FormatError, SchemaError, get_head

from .torchscript_export import EXAMPLE, artifact_file, check_dynamic, inspect_artifact, write_folder_files

log = logging.getLogger(__name__)

NAME = "torch-export"
KIND = "artifact"
DESCRIPTION = "torch.export program model.pt2 (torch.export.load, dynamic batch/sequence) + config.json + tokenizer files"
FILE = "model.pt2"


def dynamic_shapes(ckpt: Checkpoint) -> tuple[dict[int, object], ...]:
    """One spec per positional input: axis -> torch.export.Dim (shared Dim objects tie the inputs)."""
    torch = import_torch()
    Dim = torch.export.Dim
    batch = Dim("batch", min=1)
    seq = Dim("seq", min=1, max=ckpt.config.max_position_embeddings)
    if get_head(ckpt.head).choices:
        spec = {0: batch, 1: Dim("choices", min=1), 2: seq}
    else:
        spec = {0: batch, 1: seq}
    return (spec, spec, spec)


def detect(path: Path) -> bool:
    return artifact_file(Path(path), FILE) is not None


def write(ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Export ``ckpt`` into ``out/model.pt2`` (+ config.json, assets)."""
    if options:
        raise SchemaError(f"the {NAME} writer takes no options ({', '.join(options)} given)")
    torch = import_torch()
    from electra_bridge.runtimes.torch_fuse import fuse
    from electra_bridge.runtimes.torch_module import example_inputs, from_checkpoint

    module = from_checkpoint(ckpt)       # eager reference; check_dynamic compares against it
    graph = fuse(module, module._ops)    # same math, fused LayerNorm/softmax/GELU kernels
    args = example_inputs(ckpt.config, ckpt.head, **EXAMPLE)
    try:
        program = torch.export.export(graph, args, dynamic_shapes=dynamic_shapes(ckpt), strict=False)
    except Exception as exc:  # torch raises several types (UserError, ConstraintViolationError, ...)
        raise FormatError(f"torch.export failed for head {ckpt.head}: {str(exc).splitlines()[0]}") from exc
    check_dynamic(program.module(), module, ckpt, NAME)
    meta = metadata(NAME, ckpt.config.for_head(ckpt.head), ckpt.head, module.output_names)
    torch.export.save(program, str(out / FILE), extra_files={META_NAME: meta})
    log.debug("exported %s into %s", ckpt.head, FILE)
    return [out / FILE, *write_folder_files(ckpt, out)]


def open_runner(path: Path) -> TorchArtifactRunner:
    target = artifact_file(Path(path), FILE)
    if target is None:
        raise FormatError(f"{path}: no electra-bridge torch.export {FILE} found")
    return TorchArtifactRunner(target, NAME, name=str(path))


def inspect(path: Path) -> dict:
    return inspect_artifact(Path(path), NAME, FILE)
