"""The model card (``README.md``) of every output folder: Hugging Face YAML front matter, then what the
folder holds, where it came from, and the verification table that proves it.

``render`` is a pure function (strings in, text out: no file, clock or network), so a card is a
function of the conversion alone and tests compare it exactly. ``files`` adapts it to a Checkpoint
and a Report for ``convert``: ``{"README.md": bytes}``.

Front matter (what the hub reads, https://huggingface.co/docs/hub/model-cards):

* ``library_name``: ``transformers`` for safetensors, h5 and msgpack folders (transformers loads
  them), ``onnx``, ``pytorch`` for TorchScript and torch.export programs, ``keras`` for ``.keras``
  models, ``keras-hub`` for keras-hub presets (the hub's own name for that library); none for a TF1
  checkpoint, which no hub library loads (it is tagged ``tensorflow`` instead);
* ``tags``: ``electra``, ``electra-bridge``, the format, and for TF1 ``tensorflow``;
* ``base_model``: the hub repo id when the source is one: ``org/name`` as given, or a hub cache folder
  ``.../models--org--name[/snapshots/<commit>]``; omitted for any other path (a guess would link a
  wrong model);
* ``pipeline_tag`` from the head (PIPELINE_TAGS); the ``pretraining`` discriminator gets none on
  purpose: replaced-token detection is no hub pipeline, and ``token-classification`` would make the
  hub's widget label every token with a meaningless class.

Strings in the front matter are written as JSON strings, which YAML reads as double-quoted scalars:
any path or label survives quoting.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np

from electra_bridge.runtimes import Report
from electra_bridge.schemas import Checkpoint, get_head

from .engine import hf_cache
from .engine.output import tool_version as installed_version

LIBRARY = {"safetensors": "transformers", "h5": "transformers", "msgpack": "transformers", "onnx": "onnx",
           "torchscript": "pytorch", "torch-export": "pytorch", "keras": "keras", "keras-hub": "keras-hub"}
EXTRA_TAGS = {"tf1": ("tensorflow",)}
PIPELINE_TAGS = {"base": "feature-extraction", "masked-lm": "fill-mask", "causal-lm": "text-generation",
                 "sequence-classification": "text-classification", "token-classification": "token-classification",
                 "question-answering": "question-answering", "multiple-choice": "multiple-choice"}
#: what each format's folder holds, for the card's first table
FILES = {"safetensors": "`model.safetensors` (or its shards) and `config.json`",
         "h5": "`tf_model.h5` (HF TensorFlow) and `config.json`", "msgpack": "`flax_model.msgpack` (HF Flax) and `config.json`",
         "onnx": "`model.onnx` and `config.json`", "torchscript": "a TorchScript program and `config.json`",
         "torch-export": "a torch.export program (`.pt2`) and `config.json`", "keras": "`model.keras` (Keras 3)",
         "keras-hub": "a keras-hub preset", "tf1": "a Google Research TF1 checkpoint (`model.ckpt-N.*`)"}
#: the hub's repo id rule (huggingface_hub validate_repo_id): org/name, no ``--`` or ``..``
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
NOT_VERIFIED = ("**NOT verified.** Nothing has checked that this folder computes what its source computes "
                "(it was written with `--no-verify`).")


def base_model(source: str) -> str | None:
    """The hub repo id ``source`` names, or None: ``org/name`` itself (not an absolute or ``./`` path), or a
    path through a hub cache repo folder ``models--org--name``."""
    parts = PurePath(source).parts
    cached = [p for p in parts if p.startswith(hf_cache.REPO_PREFIX) and len(p) > len(hf_cache.REPO_PREFIX)]
    if cached:
        return hf_cache.repo_id(PurePath(cached[-1]))
    if _REPO_ID.fullmatch(source) and "--" not in source and ".." not in source:
        return source
    return None


def _q(value: str) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def front_matter(*, head: str, fmt: str, source: str) -> dict[str, object]:
    """The YAML front matter as a dict (what ``render`` writes between the ``---`` lines)."""
    data: dict[str, object] = {}
    if fmt in LIBRARY:
        data["library_name"] = LIBRARY[fmt]
    data["tags"] = ["electra", "electra-bridge", fmt, *EXTRA_TAGS.get(fmt, ())]
    if (repo := base_model(source)) is not None:
        data["base_model"] = repo
    if head in PIPELINE_TAGS:
        data["pipeline_tag"] = PIPELINE_TAGS[head]
    return data


def _yaml(data: Mapping[str, object]) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, list):
            lines += [f"{key}:", *(f"- {_q(v)}" for v in value)]
        else:
            lines.append(f"{key}: {_q(value)}")
    return "\n".join(lines)


def _num(x: object) -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return "inf" if math.isinf(x) else f"{x:.3g}"
    return "n/a"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _agreement(line: Mapping | None) -> str:
    if not line:
        return "n/a"
    return f"{line['fraction']:.4f} ({line['agree']}/{line['total']} {line['kind']})"


def verification(report: Mapping | None) -> list[str]:
    """The card's verification section from ``Report.to_dict()`` (runtimes/report.py): one row per head
    output, then each head's hidden-state drift in one line; None gives the NOT verified line."""
    if report is None:
        return [NOT_VERIFIED]
    atol, rtol = report["atol"], report["rtol"]
    verdict = "**passed**" if report["ok"] else "**FAILED**"
    shapes = ", ".join(str(list(s)) for s in dict.fromkeys(tuple(v) for v in report.get("inputs", {}).values()))
    lines = [f"Verified by electra-bridge: {verdict}. `{_cell(report['a'])}` (a) ran against the reference "
             f"`{_cell(report['b'])}` (b) on the {report.get('source', 'probe batch')}"
             + (f" (input shapes {shapes})" if shapes else "") + "; an output passes where |a - b| <= atol + "
             f"rtol * |b| everywhere (atol {atol:g}, rtol {rtol:g}).", "",
             "| head | output | max_abs | max_rel | agreement | tolerance | ok |",
             "|---|---|---|---|---|---|---|"]
    drift = []
    for head, h in report["heads"].items():
        for name, d in h["outputs"].items():
            lines.append(f"| {head} | {name} | {_num(d['max_abs'])} | {_num(d['max_rel'])} | "
                         f"{_agreement(h.get('agreement', {}).get(name))} | atol {atol:g}, rtol {rtol:g} | "
                         f"{'yes' if d['ok'] else '**no**'} |")
        states = h.get("hidden_state_drift") or {}
        if states:
            worst = max(states, key=lambda n: states[n]["max_abs"])
            drift.append(f"* {head}: {len(states)} hidden states compared, largest max_abs {_num(states[worst]['max_abs'])} "
                         f"({worst}); first divergence: {h.get('first_divergence') or 'none'}")
    if drift:
        lines += ["", "Hidden-state drift (embeddings, then each layer):", *drift]
    if report.get("problem"):
        lines += ["", f"Problem: {_cell(report['problem'])}"]
    return lines


def _usage(head: str, fmt: str) -> list[str]:
    if LIBRARY.get(fmt) != "transformers":
        return [f"Load it with the library its format belongs to ({fmt}); `electra-bridge inspect .` shows what it holds."]
    prefix = {"h5": "TF", "msgpack": "Flax"}.get(fmt, "")
    cls = prefix + get_head(head).hf_class
    return ["```python", f"from transformers import AutoTokenizer, {cls}", "",
            f'model = {cls}.from_pretrained("path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```"]


def render(ckpt_config: Mapping, *, head: str, fmt: str, dtype: str, source: str, source_format: str,
           report: Mapping | None, tool_version: str) -> str:
    """The model card of one output folder.

    ``ckpt_config``: the HF config.json dict (``ElectraConfig.to_dict()``); ``head``: a canonical head
    name; ``fmt``: the output format's registry name; ``dtype``: the stored weight dtype (``float32``,
    ``float16``, ``bfloat16``, ``int8`` ...); ``source`` / ``source_format``: the path converted and its
    format; ``report``: ``Report.to_dict()`` of the verification, or None when there was none (the
    card then says NOT verified); ``tool_version``: electra-bridge's version. Returns UTF-8 text
    ending in one newline."""
    get_head(head)
    cfg = dict(ckpt_config)
    size = ", ".join(f"{label} {cfg[key]}" for key, label in (
        ("hidden_size", "hidden"), ("num_hidden_layers", "layers"), ("num_attention_heads", "attention heads"),
        ("embedding_size", "embedding"), ("intermediate_size", "intermediate"), ("vocab_size", "vocabulary"),
        ("max_position_embeddings", "positions")) if key in cfg)
    labels = cfg.get("id2label") or {}
    rows = [("format", f"`{fmt}`: {FILES.get(fmt, fmt)}"), ("head", f"`{head}` ({get_head(head).hf_class})"),
            ("dtype", dtype), ("source", f"`{_cell(source)}`"), ("source format", f"`{source_format}`"),
            ("model", size or "n/a")]
    if head in ("sequence-classification", "token-classification") and labels:
        rows.append(("labels", ", ".join(_cell(labels[k]) for k in sorted(labels, key=lambda k: int(k)))))
    rows.append(("converted by", f"electra-bridge {tool_version}"))
    lines = ["---", _yaml(front_matter(head=head, fmt=fmt, source=source)), "---", "",
             f"# ELECTRA {head} ({fmt})", "",
             f"This folder was converted by electra-bridge {tool_version} from `{_cell(source)}` ({source_format}).", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "## Verification", "", *verification(report), "",
             "## Usage", "", *_usage(head, fmt)]
    return "\n".join(lines) + "\n"


def stored_dtype(ckpt: Checkpoint) -> str:
    """One dtype name for the card: the single stored dtype, or the names joined (``float16+float32``)."""
    names = sorted({np.dtype(t.dtype).name for t in ckpt.tensors.values()})
    return "+".join(names) if names else "n/a"


def files(ckpt: Checkpoint, fmt: str, report: Report | None = None, *, dtype: str | None = None,
          tool_version: str | None = None) -> dict[str, bytes]:
    """``{"README.md": card}`` for ``ckpt`` written as ``fmt``; ``report``: the Report of the
    verification, None when unverified; ``dtype``: what the artifact stores when the writer changed it
    (an int8-quantized ONNX graph of a float32 checkpoint), else the checkpoint's stored dtype."""
    data = report.to_dict() if report is not None else None
    if data is not None:   # side a of convert's check is this folder, still under its staging name
        data = {**data, "a": "this folder"}
    text = render(ckpt.hf_config.to_dict(), head=ckpt.head, fmt=fmt, dtype=dtype or stored_dtype(ckpt),
                  source=str(ckpt.provenance.get("path", "in memory")),
                  source_format=str(ckpt.provenance.get("format", "in memory")),
                  report=data, tool_version=tool_version or installed_version())
    return {"README.md": text.encode("utf-8")}
