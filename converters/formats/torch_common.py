"""What the two torch artifact formats share: TorchScript ``model.pt`` (formats/torchscript.py)
and torch.export ``model.pt2`` (formats/torch_export.py). Not a format itself.

Both hold runtimes/torch_module.ElectraModule (the shared forward pass with torch ops)
after runtimes/torch_fuse swapped forward.py's LayerNorm, softmax and GELU blocks for
torch's fused kernels (same math). Each is compiled from example inputs of ``EXAMPLE``
size, then run beside the unfused eager module at another shape (``check_dynamic``): an
artifact that froze the example's sizes is refused at export, not found in serving. The
file carries the JSON record of runtimes/torch_artifacts.py (head, config, inputs,
outputs), which is also what detection looks for: a plain ``torch.save`` file is no artifact.
The folder's config.json and tokenizer files are written by the engine.

This is a converter-side module (it builds an ``ArtifactFormat`` and lists tokenizer assets);
runtimes/torch_artifacts.py keeps the loader and runner side, which needs nothing from
converters.
"""

from __future__ import annotations

import logging
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from electra_bridge.runtimes.torch_artifacts import LOADERS, META_NAME, TorchArtifactRunner, import_torch, metadata
from electra_bridge.schemas import HEADS, Checkpoint, FormatError

from ..engine.assets import ASSET_NAMES
from ..engine.format import ArtifactFormat

log = logging.getLogger(__name__)

#: the example shape used to trace/export: sizes >= 2 (torch.export specializes 0/1), short for speed
EXAMPLE = {"batch": 2, "seq": 8, "choices": 2}

#: (fused module, example inputs, checkpoint) -> (the compiled callable, save(path, metadata JSON))
Compile = Callable[[object, tuple, Checkpoint], tuple[Callable, Callable[[Path, str], None]]]


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


def check_dynamic(saved, module, ckpt: Checkpoint, fmt: str, dtype: str = "float32") -> None:
    """Run ``saved`` and the eager module at a shape unlike the example (batch 1, longer
    sequence); a trace or export that froze the example's sizes fails here, not in serving.

    float32: equal to 1e-5. Half: within the (fmt, dtype) tolerance row, because the fused
    float32 LayerNorm rounds differently by ~1e-7, which can move a later cast to the half
    dtype by one unit in its last place. Elements the eager module itself computes as inf/NaN
    (a float16 overflow) are left to the verification, whose overflow audit names the layer."""
    import numpy as np

    from electra_bridge.runtimes.torch_module import example_inputs
    from electra_bridge.runtimes.verify import tolerance

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
        a, b = got[name].numpy().astype(np.float64), ref.numpy().astype(np.float64)
        finite = np.isfinite(b)
        if not finite.all():
            log.info("%s: the eager %s module computes inf/NaN on %s at the check shape; the verification's "
                     "overflow audit names the layer", fmt, dtype, name)
        err = np.where(finite, np.abs(a - b), 0.0)
        err = np.where(np.isnan(err), np.inf, err)     # the artifact non-finite where the module is not
        atol, rtol = (1e-5, 0.0) if dtype == "float32" else tolerance(fmt, dtype)
        if not np.all(err <= atol + rtol * np.where(finite, np.abs(b), 0.0)):
            raise FormatError(f"the {fmt} artifact differs from the eager {dtype} module on {name} "
                              f"(max-abs {float(err.max()):.2e}, tolerance {atol:g} + {rtol:g}*|ref|)")


def export_artifact(ckpt: Checkpoint, out: Path, fmt: str, file_name: str, compile_: Compile) -> list[Path]:
    """Compile the fused module of ``ckpt`` with ``compile_``, check it at a new shape, save ``out/file_name``."""
    from electra_bridge.runtimes.runner import weights_dtype
    from electra_bridge.runtimes.torch_fuse import fuse
    from electra_bridge.runtimes.torch_module import example_inputs, from_checkpoint

    dtype = weights_dtype(ckpt)
    module = from_checkpoint(ckpt, dtype=dtype)   # eager reference; check_dynamic compares against it
    graph = fuse(module, module._ops)             # same math, fused LayerNorm/softmax/GELU kernels
    run, save = compile_(graph, example_inputs(ckpt.config, ckpt.head, **EXAMPLE), ckpt)
    check_dynamic(run, module, ckpt, fmt, dtype)
    save(out / file_name, metadata(fmt, ckpt.hf_config, ckpt.head, module.output_names, dtype))
    log.debug("%s: wrote head %s into %s (%s)", fmt, ckpt.head, file_name, dtype)
    return [out / file_name]


def open_artifact(path: Path, fmt: str, file_name: str, label: str) -> TorchArtifactRunner:
    target = artifact_file(path, file_name)
    if target is None:
        raise FormatError(f"{path}: no electra-bridge {label} {file_name} found")
    return TorchArtifactRunner(target, fmt, name=str(path))


def inspect_artifact(path: Path, fmt: str, file_name: str) -> dict:
    """Head, config, compute dtype, inputs/outputs, parameters (name, shape, dtype; ``dtypes`` counts them)
    and distinct storages."""
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
        "dtype": meta["dtype"],
        "outputs": meta["outputs"],
        "torch_version": meta.get("torch_version"),
        "num_parameters": int(sum(t.numel() for t in state.values())),
        "dtypes": dict(Counter(str(t.dtype).removeprefix("torch.") for t in state.values()).most_common()),
        "distinct_storages": len(storages),
        "tensors": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for n, t in sorted(state.items())],
        "assets": sorted(n for n in ASSET_NAMES if (folder / n).is_file()),
    }


def artifact_format(name: str, file_name: str, label: str, compile_: Compile) -> ArtifactFormat:
    """The ``ArtifactFormat`` of a torch artifact saved as ``file_name``; ``compile_`` is what differs
    between TorchScript and torch.export. Every head is exportable; the format takes no options."""
    return ArtifactFormat(
        name=name,
        extra="torch",
        detect=lambda path: artifact_file(path, file_name) is not None,
        export=lambda ckpt, out: export_artifact(ckpt, out, name, file_name, compile_),
        open_runner=lambda path: open_artifact(path, name, file_name, label),
        inspect=lambda path: inspect_artifact(path, name, file_name),
        heads=tuple(HEADS),
    )
