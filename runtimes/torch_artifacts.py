"""Runners for the saved torch artifacts: TorchScript ``model.pt`` and torch.export ``model.pt2``.

Both artifacts take ``(input_ids, attention_mask, token_type_ids)`` positionally, int64,
[B, S] ([B, K, S] for multiple-choice), and return a dict of float32 tensors: the head's
outputs (transformers names) and ``hidden_states.0..L``. Each file carries a small JSON
record (``electra_bridge.json``, stored inside the archive as an extra file) with the
head, the config, the input/output names and the compute ``dtype`` ("float32", or
"float16"/"bfloat16" for a ``--dtype`` half artifact: half weights and matmuls, float32
LayerNorm/softmax/mask, still int64 in and float32 out; runtimes/torch_module.py), so a
lone file still says what it is; the runner reports that dtype, which picks its tolerance row.
Loading needs only torch: no electra_bridge code is referenced by the artifacts.

Opening an artifact never executes code from it. A ``.pt2`` is read into memory once and
checked by ``check_pt2`` (only the members, payloads, expressions, guards and operators that
our own export writes; everything torch.export.load would pickle-load, ``eval`` or compile is
refused) before torch.export.load sees those same bytes. A TorchScript file is loaded by
``torch.jit.load`` from the same in-memory bytes: its code is TorchScript (compiled by torch's
TorchScript frontend, not Python ``exec``) and its pickles go through TorchScript's own
unpickler, which builds only tensors and TorchScript types, never arbitrary Python globals.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from electra_bridge.schemas import ElectraConfig, FormatError, MissingDependencyError, SchemaError, get_head
from electra_bridge.schemas.files import read_regular

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


#: the compute dtypes an artifact may record (float32 unless written with a half ``--dtype``)
ARTIFACT_DTYPES = ("float32", "float16", "bfloat16")


def metadata(fmt: str, cfg: ElectraConfig, head: str, output_names: tuple[str, ...], dtype: str = "float32") -> str:
    """The JSON record stored inside an artifact (``dtype``: its weights' and matmuls' dtype)."""
    torch = import_torch()
    if dtype not in ARTIFACT_DTYPES:
        raise SchemaError(f"artifact dtype {dtype!r}: choose one of {', '.join(ARTIFACT_DTYPES)}")
    return json.dumps({"format": fmt, "head": head, "inputs": list(INPUT_NAMES), "input_dtype": "int64",
                       "outputs": list(output_names), "output_dtype": "float32", "dtype": dtype,
                       "torch_version": torch.__version__, "config": cfg.to_dict()}, indent=2)


def parse_metadata(raw: str | bytes, path: Path) -> dict:
    try:
        meta = json.loads(raw)
        get_head(meta["head"])
        meta["config"] = ElectraConfig.from_dict(meta["config"])
        meta.setdefault("dtype", "float32")
        if meta["dtype"] not in ARTIFACT_DTYPES:
            raise ValueError(f"dtype {meta['dtype']!r} is none of {', '.join(ARTIFACT_DTYPES)}")
    except (ValueError, KeyError, TypeError, SchemaError) as exc:
        raise FormatError(f"{path}: the embedded {META_NAME} is missing or unreadable ({exc}); "
                          "this file was not written by electra-bridge") from exc
    return meta


# --- opening a .pt2 without executing anything in it ---------------------------------------------
#: largest artifact file read into memory (the weights of a large ELECTRA are ~1.4 GB)
MAX_ARTIFACT_BYTES = 8 << 30
#: every member a torch.export.save archive of ours holds, below its one root folder
_PT2_MEMBER = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                         r"|models/model\.json|data/weights/(model_weights_config\.json|weight_\d+)"
                         r"|data/constants/(model_constants_config\.json|tensor_\d+)"
                         r"|data/sample_inputs/model\.pt|extra/" + re.escape(META_NAME) + r")")
#: node targets a program of ours calls: aten operators, symbolic-int arithmetic, getitem on tuple outputs
_PT2_TARGET = re.compile(r"torch\.ops\.aten\.\w+\.\w+|torch\.sym_(?:min|max|not|int|float|ite)"
                         r"|_operator\.(?:getitem|add|sub|mul|floordiv|truediv|mod|neg|pow|eq|ne|lt|le|gt|ge|and_|or_|not_)")
_GUARD_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv,
              ast.Mod, ast.USub, ast.And, ast.Or)


def _guard_ok(text: str) -> bool:
    """True when ``text`` is arithmetic and comparisons (min/max allowed) over integers and input sizes
    ``L['input_ids'].size()[i]``: the only guards torch.export writes for our programs."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False

    def size(node) -> bool:  # L['<input>'].size()[<int>]
        return (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                and type(node.slice.value) is int and isinstance(node.value, ast.Call)
                and not node.value.args and not node.value.keywords
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "size"
                and isinstance(node.value.func.value, ast.Subscript)
                and isinstance(node.value.func.value.value, ast.Name) and node.value.func.value.value.id == "L"
                and isinstance(node.value.func.value.slice, ast.Constant)
                and node.value.func.value.slice.value in INPUT_NAMES)

    def ok(node) -> bool:
        if size(node):
            return True
        if isinstance(node, ast.Constant):
            return type(node.value) in (int, bool)
        if isinstance(node, ast.Compare):
            return all(isinstance(o, _GUARD_OPS) for o in node.ops) and ok(node.left) and all(map(ok, node.comparators))
        if isinstance(node, ast.BinOp):
            return isinstance(node.op, _GUARD_OPS) and ok(node.left) and ok(node.right)
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.op, (ast.USub, ast.Not)) and ok(node.operand)
        if isinstance(node, ast.BoolOp):
            return isinstance(node.op, _GUARD_OPS) and all(map(ok, node.values))
        if isinstance(node, ast.Call):
            return (isinstance(node.func, ast.Name) and node.func.id in ("min", "max") and not node.keywords
                    and all(map(ok, node.args)))
        return False

    return len(text) <= 10_000 and ok(tree.body)


#: the sympy constructors a symbolic size expression of ours is written with (srepr form)
_SYMPY_CALLS = frozenset({"Symbol", "Integer", "Add", "Mul", "Pow", "Max", "Min", "Mod", "FloorDiv",
                          "CleanDiv", "CeilDiv", "PythonMod", "Rational"})
_SYMBOL = re.compile(r"[a-z]\d+")


def _sympy_expr_ok(text: str) -> bool:
    """True when ``text`` is only nested calls of known sympy constructors on int/bool/symbol-name literals."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False

    def ok(node) -> bool:
        if isinstance(node, ast.Constant):
            return type(node.value) in (int, bool) or (type(node.value) is str and bool(_SYMBOL.fullmatch(node.value)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return ok(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS:
            return all(map(ok, node.args)) and all(
                k.arg is not None and k.arg.isidentifier() and isinstance(k.value, ast.Constant)
                and type(k.value.value) is bool for k in node.keywords)
        return False

    return len(text) <= 10_000 and ok(tree.body)


def _walk(obj, key: str = ""):
    """(key, value) of every scalar in a JSON document."""
    stack = [(key, obj)]
    while stack:
        key, obj = stack.pop()
        if isinstance(obj, dict):
            stack.extend(obj.items())
        elif isinstance(obj, list):
            stack.extend((key, v) for v in obj)
        else:
            yield key, obj


def check_pt2(data: bytes, path: Path) -> None:
    """Refuse a ``.pt2`` archive unless everything torch.export.load would execute is known inert.

    torch 2.13's ``torch.export.load`` runs code from the archive in four ways: ``torch.load(...,
    weights_only=False)`` of pickled weights/constants and, as a fallback, of the sample inputs;
    ``pickle.loads`` / ``torch._C._pickle_load_obj`` of opaque and custom-object constants;
    ``sympy.sympify`` (an ``eval``) of every symbolic size expression; and the guard strings
    (``guards_code``), compiled into Python that runs on each call; node targets resolve to any
    attribute of ``torch`` (``torch.hub.load`` would do). So an archive is opened only when it is
    the shape electra-bridge writes: the known members below one root (no AOTInductor ``.so``, no
    legacy pickles), no pickled weight or constant, sample inputs that torch's ``weights_only``
    unpickler accepts (so the fallback never runs), every size expression a tree of sympy
    constructors on literals, every guard arithmetic on input sizes, every node an aten operator.
    Anything else is a FormatError; the bytes checked are the bytes then loaded (one read).
    """
    torch = import_torch()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path} is not a torch.export archive ({exc})") from exc
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1:
        raise FormatError(f"{path}: a torch.export archive has one root folder, this one has {len(roots)}")
    root = roots.pop() + "/"
    unknown = [i.filename for i in infos if not _PT2_MEMBER.fullmatch(i.filename[len(root):])]
    if unknown:
        raise FormatError(f"{path}: archive member {unknown[0]!r} is not part of an electra-bridge torch.export "
                          "file; refusing to load it (torch.export.load could execute it)")
    if sum(i.file_size for i in infos) > 4 * MAX_ARTIFACT_BYTES:
        raise FormatError(f"{path}: the archive claims {sum(i.file_size for i in infos)} bytes uncompressed")

    def read_json(name: str, required: bool = True):
        try:
            return json.loads(archive.read(root + name))
        except KeyError:
            if required:
                raise FormatError(f"{path}: archive member {root + name} is missing") from None
            return {}
        except (ValueError, zipfile.BadZipFile, OSError, EOFError, RecursionError) as exc:
            raise FormatError(f"{path}: archive member {root + name} is unreadable ({exc})") from exc

    for name in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
        config = read_json(name, required=name.startswith("data/weights"))
        entries = config.get("config", {}) if isinstance(config, dict) else None
        if not isinstance(entries, dict) or any(
                not isinstance(e, dict) or e.get("use_pickle") is not False
                or not re.fullmatch(r"(weight|tensor)_\d+", str(e.get("path_name"))) for e in entries.values()):
            raise FormatError(f"{path}: {root + name} names a pickled or non-tensor payload; refusing to load it")
    program = read_json("models/model.json")
    if not isinstance(program, dict):
        raise FormatError(f"{path}: {root}models/model.json is not a program")
    for key, value in _walk(program):
        if key == "expr_str" and not (isinstance(value, str) and _sympy_expr_ok(value)):
            raise FormatError(f"{path}: symbolic size expression {str(value)[:80]!r} is not a plain sympy "
                              "expression; refusing to load it (sympify would evaluate it)")
    guards = program.get("guards_code", [])
    if not isinstance(guards, list) or not all(isinstance(g, str) and _guard_ok(g) for g in guards):
        raise FormatError(f"{path}: guards_code holds code that is not an input-size comparison; refusing to load it")
    nodes = ((program.get("graph_module") or {}).get("graph") or {}).get("nodes", [])
    for node in nodes if isinstance(nodes, list) else [None]:
        target = node.get("target") if isinstance(node, dict) else None
        if not (isinstance(target, str) and _PT2_TARGET.fullmatch(target)):
            raise FormatError(f"{path}: graph node target {str(target)[:80]!r} is not an aten operator; "
                              "refusing to load it")
    try:
        sample = archive.read(root + "data/sample_inputs/model.pt")
        torch.load(io.BytesIO(sample), weights_only=True)
    except KeyError:
        raise FormatError(f"{path}: archive member {root}data/sample_inputs/model.pt is missing") from None
    except Exception as exc:  # weights_only refusals are UnpicklingError, RuntimeError, ...
        raise FormatError(f"{path}: the sample inputs are not plain tensors ({str(exc).splitlines()[0][:200]}); "
                          "refusing to load them (torch.export.load would unpickle them unrestricted)") from exc


def read_artifact(path: Path) -> bytes:
    """The bytes of an artifact file: a regular file (no FIFO, no device) of at most MAX_ARTIFACT_BYTES."""
    return read_regular(path, MAX_ARTIFACT_BYTES, what="artifact")


def load_torchscript(path: Path):
    """(callable module, metadata) of a TorchScript file."""
    torch = import_torch()
    extra = {META_NAME: ""}
    try:
        module = torch.jit.load(io.BytesIO(read_artifact(path)), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise FormatError(f"{path} is not a loadable TorchScript file: {str(exc).splitlines()[0]}") from exc
    return module.eval(), parse_metadata(extra[META_NAME], path)


def load_torch_export(path: Path):
    """(callable module, metadata) of a torch.export ``.pt2`` file, refused by ``check_pt2`` unless inert."""
    torch = import_torch()
    extra = {META_NAME: ""}
    data = read_artifact(path)
    check_pt2(data, path)
    try:
        program = torch.export.load(io.BytesIO(data), extra_files=extra)
    except (RuntimeError, ValueError, KeyError, AssertionError, TypeError) as exc:
        raise FormatError(f"{path} is not a loadable torch.export program: {str(exc).splitlines()[0]}") from exc
    return program.module(), parse_metadata(extra[META_NAME], path)


LOADERS = {"torchscript": load_torchscript, "torch-export": load_torch_export}


class TorchArtifactRunner:
    """Runs a saved torch artifact; ``runtime`` is "torchscript" or "torch-export" and ``dtype`` the one
    its record names (together: its tolerance row)."""

    def __init__(self, path: str | Path, runtime: str, name: str | None = None):
        if runtime not in LOADERS:
            raise SchemaError(f"unknown torch artifact runtime {runtime!r}; choose one of: {', '.join(LOADERS)}")
        self.path, self.runtime = Path(path), runtime
        self._module, meta = LOADERS[runtime](self.path)
        self.config: ElectraConfig = meta["config"]
        self.head: str = meta["head"]
        self.dtype: str = meta["dtype"]
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
