"""Where a Google TF1 checkpoint's config comes from: a given HF config.json or the original
ELECTRA hparams JSON, a config.json beside the checkpoint, or the tensor shapes.

Inferred by the inference every format shares (engine/config_inference.py): V, E, P and T from
the embedding tables, H from the first layer's query kernel, I from its intermediate kernel, L
from the layer scopes, the labels from the task head; the heads by Google's rule
max(1, H // 64); gelu; LayerNorm epsilon 1e-12 (Google's value).

Also the one name a write chooses: the ``task_specific/<task>/`` scope of a fine-tuned head
(``--task-name``, checked as one TF variable scope by ``check_task_name``; ``rename_task``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from electra_bridge.schemas import ElectraConfig, SchemaError, google_num_heads
from electra_bridge.schemas.config import GOOGLE_SIZES, SIZE_LIMITS, check_types, read_config_text

from ..engine import config_inference
from ..engine.format import NativeTensor
from ..engine.rules import Rule

INFERRED = config_inference.INFERRED

#: keys only the original ELECTRA hparams JSON has (configure_pretraining / configure_finetuning)
_HPARAM_KEYS = {"model_size", "model_hparam_overrides", "generator_hidden_size", "generator_layers",
                "untied_generator", "untied_generator_embeddings", "task_names", "electra_objective",
                "num_train_steps", "max_seq_length", "do_lower_case", "model_name", "learning_rate"}


def scopes(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The top-level variable scopes present, for messages."""
    return ", ".join(sorted({n.split("/")[0] for n in shapes})) or "no model variables"


def infer_config(natives: Mapping[str, NativeTensor], rules: tuple[Rule, ...], *, net: str,
                 source: str) -> ElectraConfig:
    """The config of ``net`` from the shapes of the variables its ``rules`` map (the encoder, the
    shared embeddings and a tagging task head): the one inference of engine/config_inference.py
    that the HF formats share, with TF1's hint (the variable scopes present) when it cannot."""
    found = config_inference.canonical_view(rules, natives)
    absent = [name for name in config_inference.SIZES if name not in found]
    if absent:
        names = [r.native.format(layer=0) for r in rules if r.canonical.format(layer=0) in absent]
        raise SchemaError(f"cannot infer the {net}'s config: {', '.join(names)} missing (variables under: "
                          f"{scopes({n: t.shape for n, t in natives.items()})}); pass --config")
    return config_inference.infer_config(found, what=f"{source} ({net})", rules=rules)


def task_labels(shapes: Mapping[str, tuple[int, ...]], task: str) -> tuple[str, ...]:
    return tuple(f"LABEL_{i}" for i in range(shapes[f"task_specific/{task}/dense/kernel"][1]))


#: a TF variable scope usable as one path segment: TF op names start with a letter, digit or ``.``
#: and continue with those, ``_`` or ``-`` (``/`` would nest the scope and hide the task on reading)
TASK_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*")


def check_task_name(name: object) -> str:
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name) or name in (".", ".."):
        raise SchemaError(f"--task-name {name!r}: a task name is one TF variable scope: letters, digits, '_', '-' "
                          "and '.', starting with a letter, digit or '.' (e.g. chunk, ner, pos-tags)")
    return name


def rename_task(tensors: Sequence[NativeTensor], head: str, name: str, finetuned: tuple[str, ...]) -> list[NativeTensor]:
    """``tensors`` with the ``task_specific/<task>/`` scope renamed to ``name`` (validated); only a
    fine-tuned head (``finetuned``) has that scope, any other head is refused."""
    name = check_task_name(name)
    if head not in finetuned:
        raise SchemaError(f"--task-name names the task_specific/<NAME>/ scope of a fine-tuned head "
                          f"({', '.join(finetuned)}); a {head} checkpoint has none")
    out = []
    for t in tensors:
        scope, task, rest = (t.name.split("/", 2) + ["", ""])[:3]
        out.append(dataclasses.replace(t, name=f"{scope}/{name}/{rest}") if scope == "task_specific" and rest else t)
    return out


def is_hparams(data: dict) -> bool:
    return "model_type" not in data and "architectures" not in data and bool(_HPARAM_KEYS & set(data))


def hparams_config(h: dict, net: str) -> ElectraConfig:
    """The config google-research/electra builds from its hparams (util/training_utils.get_bert_config,
    run_pretraining.get_generator_config, configure_pretraining's embedding_size default); every
    value is type- and range-checked before it is used."""
    try:
        cfg = _hparams_config(h, net)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise SchemaError(f"hparams config: a value has the wrong type ({exc})") from None
    check_types({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in _CHECKED})
    return cfg


_CHECKED = frozenset(SIZE_LIMITS) | {"hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                                     "initializer_range"}


def _hparams_config(h: dict, net: str) -> ElectraConfig:
    size = h.get("model_size", "small")
    if size not in GOOGLE_SIZES:
        raise SchemaError(f"hparams model_size {size!r} is not one of {', '.join(GOOGLE_SIZES)}")
    overrides = dict(h.get("model_hparam_overrides") or {})
    args = {"hidden_size": GOOGLE_SIZES[size]["hidden_size"], "num_hidden_layers": GOOGLE_SIZES[size]["num_hidden_layers"],
            "vocab_size": h.get("vocab_size", 30522), **overrides}
    args.update(num_attention_heads=google_num_heads(args["hidden_size"]), intermediate_size=4 * args["hidden_size"])
    args.update(overrides)
    bert = {"hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2, **args}
    embedding = h.get("embedding_size")
    embedding = embedding if embedding is not None else (128 if size == "small" else bert["hidden_size"])
    if net == "generator" and h.get("untied_generator", True):
        hidden = round(bert["hidden_size"] * h.get("generator_hidden_size", 0.25))
        bert.update(hidden_size=hidden, num_hidden_layers=round(bert["num_hidden_layers"] * h.get("generator_layers", 1.0)),
                    intermediate_size=4 * hidden, num_attention_heads=google_num_heads(hidden))
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob",
            "initializer_range")
    return ElectraConfig(embedding_size=embedding, layer_norm_eps=1e-12, **{k: bert[k] for k in keys if k in bert})


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(read_config_text(path))
    except (ValueError, RecursionError) as exc:
        raise SchemaError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"config {path} is not a JSON object")
    return data


def given_config(config: str | Path | ElectraConfig | None, folder: Path) -> tuple[ElectraConfig | dict | None, str]:
    """(an HF config, an hparams dict, or None; where it came from): ``config`` if given, else an
    HF config.json in ``folder`` (an hparams JSON there is not taken unasked), else None."""
    if isinstance(config, ElectraConfig):
        return config, "the config passed in"
    if config is not None:
        data = _load_json(Path(config))
        return (data if is_hparams(data) else ElectraConfig.from_dict(data)), f"--config {config}"
    beside = folder / "config.json"
    if beside.is_file():
        data = _load_json(beside)
        if not is_hparams(data):
            return ElectraConfig.from_dict(data), f"{beside}"
    return None, INFERRED
