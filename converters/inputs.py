"""User inputs for verify: saved arrays (``--inputs FILE.npz``), checked against a model config.

Contract (same as ``probe.probe_batch``): int64 ``input_ids`` and optional
``attention_mask`` (0/1; default all ones) and ``token_type_ids`` (default zeros), all of
one shape, [B, S] or [B, K, S] (K choices, multiple-choice). ``for_head`` adapts one
batch to every head: a multiple-choice head sees a [B, S] batch as one example with B
choices ([1, B, S]); other heads see a [B, K, S] batch as B*K rows.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from electra_bridge.schemas import ElectraConfig, FormatError, SchemaError, get_head

NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: the most elements one --inputs array may hold (a verify batch is a few thousand tokens)
MAX_ELEMENTS = 1 << 24


def check_headers(path: Path) -> None:
    """Names, dtypes and shapes of an .npz from its .npy headers, before any array is loaded."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        unknown = sorted(i.filename.removesuffix(".npy") for i in infos
                         if i.filename.removesuffix(".npy") not in NAMES)
        if unknown:
            raise SchemaError(f"--inputs {path}: unexpected arrays {', '.join(unknown)}; allowed: {', '.join(NAMES)}")
        for info in infos:
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(fh)
            count = int(np.prod(shape, dtype=object))
            if count > MAX_ELEMENTS or dtype.hasobject:
                raise SchemaError(f"--inputs {path}: {name} is {list(shape)} {dtype}; an input array holds at most "
                                  f"{MAX_ELEMENTS} integers")


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz of input arrays (never pickles) and complete the optional ones."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"--inputs {path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            check_headers(path)
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):   # a bare .npy gives one array
            raise FormatError(f"--inputs {path}: expected an .npz archive (np.savez) with {', '.join(NAMES)}")
        with data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, TypeError) as exc:
        raise FormatError(f"--inputs {path} is not a readable .npz file: {exc}") from exc
    unknown = sorted(set(arrays) - set(NAMES))
    if unknown:
        raise SchemaError(f"--inputs {path}: unexpected arrays {', '.join(unknown)}; allowed: {', '.join(NAMES)}")
    if "input_ids" not in arrays:
        raise SchemaError(f"--inputs {path}: input_ids is missing (arrays: {', '.join(arrays) or 'none'})")
    return complete(arrays, source=f"--inputs {path}")


def complete(arrays: Mapping[str, np.ndarray], source: str = "inputs") -> dict[str, np.ndarray]:
    """Check dtypes and shapes; default attention_mask to ones and token_type_ids to zeros; cast to int64."""
    ids = arrays["input_ids"]
    if ids.ndim not in (2, 3) or 0 in ids.shape:
        raise SchemaError(f"{source}: input_ids must be [batch, seq] or [batch, choices, seq], "
                          f"got shape {list(ids.shape)}")
    out = {}
    for name in NAMES:
        arr = arrays.get(name)
        if arr is None:
            arr = np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise SchemaError(f"{source}: {name} must hold integers, not {arr.dtype}")
        if arr.shape != ids.shape:
            raise SchemaError(f"{source}: {name} has shape {list(arr.shape)}, input_ids {list(ids.shape)}; "
                              "they must match")
        out[name] = arr.astype(np.int64)
    if not np.isin(out["attention_mask"], (0, 1)).all():
        raise SchemaError(f"{source}: attention_mask must hold only 0 and 1")
    return out


def check(batch: Mapping[str, np.ndarray], cfg: ElectraConfig, source: str = "inputs") -> None:
    """Every id fits the model's tables (an out-of-range id would be a gather error, or worse, silently clipped)."""
    seq = batch["input_ids"].shape[-1]
    if seq > cfg.max_position_embeddings:
        raise SchemaError(f"{source}: sequence length {seq} exceeds the model's max_position_embeddings "
                          f"({cfg.max_position_embeddings})")
    for name, limit in (("input_ids", cfg.vocab_size), ("token_type_ids", cfg.type_vocab_size)):
        arr = batch[name]
        if arr.min() < 0 or arr.max() >= limit:
            raise SchemaError(f"{source}: {name} must lie in [0, {limit}) for this model, found "
                              f"{int(arr.min())}..{int(arr.max())}")


def for_head(batch: Mapping[str, np.ndarray], head: str) -> dict[str, np.ndarray]:
    """The batch in the rank ``head`` expects ([B, K, S] for multiple-choice, else [B, S])."""
    choices = get_head(head).choices
    ndim = batch["input_ids"].ndim
    if choices and ndim == 2:
        return {k: v[None] for k, v in batch.items()}
    if not choices and ndim == 3:
        return {k: v.reshape(-1, v.shape[-1]) for k, v in batch.items()}
    return dict(batch)
