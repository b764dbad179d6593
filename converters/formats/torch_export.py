"""torch.export artifact: a folder with ``model.pt2`` (torch.export.save) + config.json + assets.

The program is exported from the fused runtimes/torch_module.ElectraModule
(formats/torch_common.py: what both torch artifacts share) with symbolic batch and
sequence dims (and choices for multiple-choice), declared with ``torch.export.Dim``.
torch.export specializes any dim whose example size is 0 or 1, so the example inputs
are 2 x 8 (x 2 choices) and the dims have ``min=1``; the export then runs batch 1 and a
longer sequence to prove the program is not frozen. The sequence dim is bounded by
max_position_embeddings (positions beyond it do not exist). ``--dtype float16|bfloat16``
exports the half module (formats/torch_common.py); inputs stay int64, outputs float32.

Load it anywhere with torch alone::

    program = torch.export.load("out/model.pt2")
    out = program.module()(input_ids, attention_mask, token_type_ids)   # dict of tensors
"""

from __future__ import annotations

from electra_bridge.runtimes.torch_artifacts import META_NAME, import_torch
from electra_bridge.schemas import Checkpoint, FormatError, get_head

from .torch_common import artifact_format


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


def export_program(graph, args, ckpt: Checkpoint):
    """``torch.export.export`` of ``graph``: (the program's module, save the program with our record)."""
    torch = import_torch()
    try:
        program = torch.export.export(graph, args, dynamic_shapes=dynamic_shapes(ckpt), strict=False)
    except Exception as exc:  # torch raises several types (UserError, ConstraintViolationError, ...)
        raise FormatError(f"torch.export failed for head {ckpt.head}: {str(exc).splitlines()[0]}") from exc
    return program.module(), lambda path, meta: torch.export.save(program, str(path), extra_files={META_NAME: meta})


FORMAT = artifact_format("torch-export", "model.pt2", "torch.export", export_program)
