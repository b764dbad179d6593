"""The one read pipeline and the one write pipeline every checkpoint format runs through.

read:  locate the weights -> list native tensors (shard indexes resolved once, confined to
       the folder) -> plan (config from config.json / ``--config``, head from
       ``architectures`` else from marker tensors; TF1 plans for itself) -> head-model
       prefix stripped -> ties checked and dropped -> rules bound -> strict accounting ->
       lazy canonical tensors -> validated ``Checkpoint`` (narrowed to ``head`` if asked).
write: writability checks -> rules bound -> prefixes added -> native tensors in the
       native layout, each loaded only when the codec writes it (write options, e.g.
       ``max_shard_size``, go to the codec) -> config.json + assets.

dtype contract: codecs report the stored dtype (``ml_dtypes.bfloat16`` for bf16). The
canonical checkpoint keeps it (float32, float16 or bfloat16; byte order made native), and
writers write it back unchanged: a bf16 file comes back bf16, bit for bit. A ``--dtype``
cast is ``cast`` below, applied once on the way to a writer; runtimes compute in float32
from half weights. Integer, bool and complex tensors are refused: no ELECTRA parameter is one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from electra_bridge.runtimes import blas
from electra_bridge.schemas import (
    TIES, Checkpoint, FormatError, LazyTensor, SchemaError, config_for_head, detect_head, expected_shapes,
    head_for_architecture, materialize,
)
from electra_bridge.schemas.tensors import BACKBONE_GROUPS

from . import config_inference, extras, files, shards
from .assets import collect, config_for, write_assets
from .format import ArtifactFormat, CheckpointFormat, NativeTensor, Plan, ReadRequest
from .options import accepted
from .rules import Binding, Rule, account, bind, ignored_reason

log = logging.getLogger("electra_bridge")

#: stored dtypes a canonical checkpoint takes as they are
KEPT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
BFLOAT16 = "bfloat16"
#: ``--dtype`` names -> the numpy dtype a cast writes
CAST_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
               "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def check_options(fmt, stage: str, options: Mapping[str, object]) -> None:
    declared = accepted(fmt.options, stage)
    extra = sorted(k for k, v in options.items() if v is not None and k not in declared)
    if extra:
        verb = "reading" if stage == "read" else "writing"
        flags = sorted(o.flag for o in fmt.options if o.stage == stage)
        raise SchemaError(f"{verb} {fmt.name} takes no option {', '.join('--' + k.replace('_', '-') for k in extra)}"
                          + (f" (it takes: {', '.join(flags)})" if flags else ""))


# ---- reading ------------------------------------------------------------------------------------

def list_natives(fmt: CheckpointFormat, weights: Path) -> dict[str, NativeTensor]:
    if fmt.index_name is not None and shards.is_index(weights):
        return shards.list_sharded(weights, fmt.codec.list, fmt.index_key)
    return fmt.codec.list(weights)


def read(fmt: CheckpointFormat, path: str | Path, *, head: str | None = None, config=None,
         allow_nonfinite: bool | None = False, **options) -> Checkpoint:
    """Read ``path`` (a folder or a file) of format ``fmt`` into a canonical Checkpoint.

    Every file opened is a regular file inside the source folder (engine/files.py). A tensor
    holding NaN or Inf is refused, named, when it is loaded (``allow_nonfinite`` reads it as is)."""
    path = Path(path)
    check_options(fmt, "read", options)
    weights = fmt.codec.locate(path)
    if weights is None or not weights.exists():
        raise FormatError(f"{path}: no {fmt.name} weights found")
    extras.require(fmt.extra, f"reading {weights} ({fmt.name})")
    root = files.source_root(path)
    files.confined(weights, root, "weights file")
    if (weights.parent / "config.json").exists() and not config:
        files.confined(weights.parent / "config.json", root, "config.json")
    natives = strip_prefix(list_natives(fmt, weights), fmt.head_prefix, weights)
    check_claims(natives, weights)
    request = ReadRequest(weights, natives, head, config, {k: v for k, v in options.items() if v is not None})
    plan = fmt.plan(request) if fmt.plan is not None else hf_plan(fmt, request)
    return build(fmt, request, plan, path, allow_nonfinite=bool(allow_nonfinite))


#: the most bytes a tensor table may claim per byte stored (deflate's limit is ~1032:1)
MAX_CLAIM_RATIO = 1100


def check_claims(natives: Mapping[str, NativeTensor], weights: Path) -> None:
    """Refuse a table whose tensors claim more bytes than the files beside ``weights`` can hold
    (MAX_CLAIM_RATIO x their size: compressed formats included), before anything is allocated."""
    stored = sum(p.stat().st_size for p in weights.parent.iterdir() if p.is_file())
    claimed, worst = 0, None
    for t in natives.values():
        try:
            size = int(np.prod(tuple(t.shape), dtype=object)) * np.dtype(t.dtype).itemsize
        except TypeError:
            continue   # an odd dtype: canonical_dtype refuses it by name
        claimed += size
        if worst is None or size > worst[1]:
            worst = (t.name, size)
    if claimed > MAX_CLAIM_RATIO * max(stored, 1):
        raise FormatError(f"{weights}: its tensors claim {claimed} bytes (the largest, {worst[0]}, {worst[1]}) but "
                          f"the files hold {stored}; the file is truncated or forged")


def strip_prefix(natives: dict[str, NativeTensor], prefix: str, source: Path) -> dict[str, NativeTensor]:
    """Backbone names without the head-model prefix (``electra.``), which head models add and base models lack."""
    if not prefix or not any(n.startswith(prefix) for n in natives):
        return natives
    out: dict[str, NativeTensor] = {}
    for name, tensor in natives.items():
        short = name.removeprefix(prefix)
        if short in out:
            raise FormatError(f"{source} holds both {prefix}{short} and {short}: two copies of one tensor")
        out[short] = tensor
    return out


def hf_plan(fmt: CheckpointFormat, request: ReadRequest) -> Plan:
    """The Hugging Face way: config.json (or ``--config``; neither: inferred from the tensor shapes,
    config_inference.py), head from ``architectures`` else from markers."""
    if request.config is None and not (request.weights.parent / "config.json").exists():
        cfg = config_inference.infer_from_natives(fmt.rules, request.natives, what=str(request.weights))
        provenance, origin = {"config": config_inference.INFERRED}, config_inference.INFERRED
    else:
        cfg, provenance, origin = config_for(request.weights, request.config), {}, "config.json"
    own_head = head_for_architecture(cfg.architectures) or detect_head(canonical_names(fmt.rules, request, cfg), cfg)
    cfg = config_for_head(fmt.read_config(cfg, own_head, str(request.weights)), own_head)
    return Plan(own_head, cfg, fmt.rules, fmt.ignored, provenance, origin)


def canonical_names(rules: tuple[Rule, ...], request: ReadRequest, cfg) -> set[str]:
    """Canonical names of the native tensors present (every rule expanded over the config's layers)."""
    found = set()
    for rule in rules:
        for i in (range(cfg.num_hidden_layers) if "{layer}" in rule.canonical else (0,)):
            if rule.native.format(layer=i) in request.natives:
                found.add(rule.canonical.format(layer=i))
    return found


def _native_of(rules: tuple[Rule, ...], canonical: str) -> Rule | None:
    return next((r for r in rules if r.canonical == canonical), None)


def drop_tied(natives: dict[str, NativeTensor], plan: Plan, source: Path) -> dict[str, NativeTensor]:
    """A tied alias a file stores anyway (pytorch_model.bin does) must equal its target; then it is dropped."""
    if not plan.config.tie_word_embeddings:
        return natives
    for alias, target in TIES.items():
        alias_rule, target_rule = _native_of(plan.rules, alias), _native_of(plan.rules, target)
        if alias_rule is None or alias_rule.native not in natives:
            continue
        if target_rule is not None and target_rule.native in natives:
            a = alias_rule.layout.to_canonical(natives[alias_rule.native].load())
            b = target_rule.layout.to_canonical(natives[target_rule.native].load())
            if a.shape != b.shape or not np.array_equal(a, b):
                raise SchemaError(f"{source}: {alias} should be tied to {target} (tie_word_embeddings is true) but "
                                  "the two differ; set tie_word_embeddings=false in config.json if it is untied")
        natives = {n: t for n, t in natives.items() if n != alias_rule.native}
    return natives


def canonical_dtype(tensor: NativeTensor, source: Path) -> np.dtype:
    """The stored dtype, kept (native byte order); anything but float32/float16/bfloat16 is refused."""
    dtype = np.dtype(tensor.dtype)
    if dtype.name == BFLOAT16:
        return np.dtype(ml_dtypes.bfloat16)
    if dtype.kind != "f" or dtype.newbyteorder("=") not in KEPT_DTYPES:
        raise FormatError(f"{source}: {tensor.name} has dtype {tensor.dtype}; ELECTRA parameters are float32, "
                          "float16 or bfloat16")
    return dtype.newbyteorder("=")


#: elements checked per step by check_finite: its bool scratch (1 MiB) is reused, never a tensor-sized temporary
FINITE_CHUNK = 1 << 20


def check_finite(arr: np.ndarray, name: str, source: Path) -> None:
    """Refuse a tensor holding NaN or Inf (no trained ELECTRA has one; it would only surface later as a mismatch).

    Checked a chunk at a time into one small scratch array: ``~np.isfinite(arr)`` whole allocated two
    bool arrays a quarter of the tensor's size each, fresh pages that cost more than the test itself."""
    flat = arr.reshape(-1)
    scratch = np.empty(min(FINITE_CHUNK, flat.size), dtype=bool)
    for start in range(0, flat.size, FINITE_CHUNK):
        part = flat[start:start + FINITE_CHUNK]
        finite = np.isfinite(part, out=scratch[:part.size])
        if not finite.all():
            bad = ~np.isfinite(arr)
            raise FormatError(f"{source}: tensor {name} holds {int(bad.sum())} NaN/Inf values (first at index "
                              f"{list(map(int, np.unravel_index(int(np.argmax(bad)), arr.shape)))}); the checkpoint "
                              "is damaged (--allow-nonfinite reads it as is)")


def _lazy(tensor: NativeTensor, binding: Binding, dtype: np.dtype, source: Path | None = None) -> LazyTensor:
    def load() -> np.ndarray:
        arr = tensor.load()
        if tuple(arr.shape) != tuple(tensor.shape):
            raise FormatError(f"{source}: tensor {tensor.name} loaded as {tuple(arr.shape)}, its header says "
                              f"{tuple(tensor.shape)}")
        if arr.dtype != dtype:   # byte order -> native; the value type is kept
            arr = arr.astype(dtype)
        if source is not None:
            check_finite(arr, tensor.name, source)
        return binding.layout.to_canonical(arr)
    return LazyTensor(binding.canonical_shape, dtype, load)


def cast_dtype(name: str | None) -> np.dtype | None:
    if name is None:
        return None
    if name not in CAST_DTYPES:
        raise SchemaError(f"--dtype {name}: choose one of {', '.join(CAST_DTYPES)}")
    return CAST_DTYPES[name]


def cast(ckpt: Checkpoint, dtype: str | None) -> Checkpoint:
    """``ckpt`` with every tensor cast to ``dtype`` (``--dtype``; None: as stored), lazily, once.

    float16 cannot hold a weight beyond +-65504: such a tensor is refused, named, when it is
    cast (before the writer stores it), instead of being written as inf.
    """
    target = cast_dtype(dtype)
    if target is None:
        return ckpt
    source = ckpt.provenance.get("path", "checkpoint")

    def lazy(name, tensor):
        if np.dtype(tensor.dtype) == target:
            return tensor

        def load():
            arr = np.asarray(materialize(tensor))
            out = arr.astype(target)
            if target == np.float16 and not np.all(np.isfinite(out)) and np.all(np.isfinite(arr)):
                peak = float(np.max(np.abs(arr.astype(np.float32))))
                raise SchemaError(f"{source}: {name} holds a weight of magnitude {peak:.4g}, beyond float16's "
                                  "range (65504); it cannot be written as float16 (--dtype bfloat16 keeps the range)")
            return out
        return LazyTensor(tuple(tensor.shape), target, load)

    tensors = {n: lazy(n, t) for n, t in ckpt.tensors.items()}
    return ckpt.with_(tensors=tensors, provenance={**ckpt.provenance, "dtype": dtype})


def build(fmt: CheckpointFormat, request: ReadRequest, plan: Plan, path: Path, *,
          allow_nonfinite: bool = False) -> Checkpoint:
    """Bind the plan's rules, account strictly, and hand out the canonical tensors lazily."""
    source = request.weights
    natives = drop_tied(dict(request.natives), plan, source)
    bindings = bind(plan.rules, plan.config, plan.head)
    dropped = account(bindings, {n: t.shape for n, t in natives.items()}, plan.ignored, source=str(source),
                      hint=f"check that the config ({plan.config_origin}) describes this file (sizes, num_labels, "
                           "architectures, tie_word_embeddings)")
    if dropped:
        reasons = Counter(ignored_reason(n, plan.ignored) for n in dropped)
        log.info("%s: left out %d tensors, never read: %s", source, len(dropped),
                 "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common()))
    finite_source = None if allow_nonfinite else source
    tensors = {c: _lazy(natives[b.native], b, canonical_dtype(natives[b.native], source), finite_source)
               for c, b in bindings.items()}
    provenance = {"format": fmt.name, "path": str(path), "file": source.name, **plan.provenance}
    assets = fmt.read_assets(source.parent) if fmt.read_assets is not None else collect(source.parent)
    ckpt = Checkpoint(plan.config, plan.head, tensors, assets, provenance).validate(str(source))
    return ckpt.as_head(request.head) if request.head and request.head != plan.head else ckpt


# ---- writing ------------------------------------------------------------------------------------

def check_head(fmt, ckpt: Checkpoint) -> None:
    if ckpt.head not in fmt.heads:
        raise SchemaError(f"head {ckpt.head} cannot be written as {fmt.name} (writable heads: {', '.join(fmt.heads)}); "
                          "--head base writes the encoder alone")


def native_tensors(fmt: CheckpointFormat, ckpt: Checkpoint) -> list[NativeTensor]:
    """The checkpoint's tensors under their native names and layout, in rules order, each loaded on demand."""
    rules = fmt.write_rules(ckpt) if fmt.write_rules is not None else fmt.rules
    backbone = set(expected_shapes(ckpt.config, BACKBONE_GROUPS))
    prefix = fmt.head_prefix if ckpt.head != "base" else ""
    out = []
    for canonical, b in bind(rules, ckpt.config, ckpt.head).items():
        tensor = ckpt.tensors[canonical]
        name = prefix + b.native if canonical in backbone else b.native
        # writers get C-contiguous arrays: a layout change copies already (rules.TRANSPOSE, by OpenBLAS's
        # omatcopy); blas.contiguous copies any other strided view and returns a contiguous array as is
        out.append(NativeTensor(name, b.native_shape, np.dtype(tensor.dtype),
                                lambda t=tensor, b=b: blas.contiguous(b.layout.to_native(materialize(t)))))
    return out


def write(fmt: CheckpointFormat, ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Write ``ckpt`` into folder ``out`` (which exists and is empty) as ``fmt``."""
    extras.require(fmt.extra, f"writing {fmt.name}")
    check_options(fmt, "write", options)
    fmt.check_writable(ckpt)
    check_head(fmt, ckpt)
    # only the options given: a codec that declares none keeps the three-argument write
    paths = fmt.codec.write(out, native_tensors(fmt, ckpt), ckpt, **{k: v for k, v in options.items() if v is not None})
    if not fmt.writes_hf_files:
        return paths
    return [*paths, *write_config_and_assets(ckpt, out, fmt.write_config(ckpt.hf_config))]


def export(fmt: ArtifactFormat, ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Export ``ckpt`` into folder ``out`` as the artifact ``fmt`` (files + config.json + assets)."""
    extras.require(fmt.extra, f"exporting {fmt.name}")
    check_options(fmt, "write", options)
    check_head(fmt, ckpt)
    paths = fmt.export(ckpt, out, **{k: v for k, v in options.items() if v is not None})
    return [*paths, *write_config_and_assets(ckpt, out, ckpt.hf_config)]


def write_config_and_assets(ckpt: Checkpoint, out: Path, cfg) -> list[Path]:
    (out / "config.json").write_text(cfg.to_json())
    return [out / "config.json", *write_assets(out, ckpt.assets)]
