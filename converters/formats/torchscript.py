"""TorchScript artifact: a folder with ``model.pt`` (torch.jit) + config.json + tokenizer assets.

``model.pt`` is a trace of the fused runtimes/torch_module.ElectraModule (formats/torch_common.py:
what both torch artifacts share, including the export-time check at a second shape). Sizes
are read from the inputs inside the graph, so the file accepts any batch size and sequence
length up to max_position_embeddings. Parameters keep their canonical names
(``state_dict()``), dense kernels [out, in], float32 -- or with ``--dtype float16|bfloat16``
that dtype (LayerNorm's stay float32; formats/torch_common.py); a tied MLM decoder is the
word-embedding table itself (one storage in the file). Inputs int64, outputs float32 either way.

Load it anywhere with torch alone::

    m = torch.jit.load("out/model.pt")
    out = m(input_ids, attention_mask, token_type_ids)   # int64 [B, S]; dict of tensors
    out["logits"]
"""

from __future__ import annotations

import warnings

from electra_bridge.runtimes.torch_artifacts import META_NAME, import_torch

from .torch_common import artifact_format


def trace(graph, args, ckpt):
    """``torch.jit.trace`` of ``graph``: (the trace, save it with our metadata record)."""
    torch = import_torch()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*deprecated")
        # strict=False: the output is a dict; check_trace off because check_dynamic compares
        # at a *different* shape, which is the check that matters.
        traced = torch.jit.trace(graph, args, strict=False, check_trace=False)
    return traced, lambda path, meta: torch.jit.save(traced, str(path), _extra_files={META_NAME: meta})


FORMAT = artifact_format("torchscript", "model.pt", "TorchScript", trace)
