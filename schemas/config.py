"""ElectraConfig: the one description of an ELECTRA model's shape and numerics.

Reads and writes Hugging Face ``config.json`` (every key ELECTRA uses), validates the
combinations the runtimes cannot honour, and knows the Google Research sizes.
Unknown keys of a config.json are kept in ``extra`` so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SchemaError
from .files import read_regular

#: Activations every runtime implements (see runtimes/forward.py ACTIVATIONS).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh", "linear")
SUPPORTED_SUMMARY_TYPES = ("first", "last", "mean")

#: upper bounds of the sizes (far above any published ELECTRA; they stop a hostile config.json from
#: driving loops and allocations before any tensor is read): field -> largest accepted value
SIZE_LIMITS = {"vocab_size": 1 << 22, "embedding_size": 1 << 16, "hidden_size": 1 << 16, "num_hidden_layers": 512,
               "num_attention_heads": 1 << 12, "intermediate_size": 1 << 18, "max_position_embeddings": 1 << 20,
               "type_vocab_size": 1 << 12}
MAX_LABELS = 1 << 16
#: a config.json larger than this is not a config (read no further)
MAX_CONFIG_BYTES = 16 << 20
_INT_FIELDS = (*SIZE_LIMITS, "pad_token_id")
_FLOAT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                 "summary_last_dropout", "classifier_dropout")
_BOOL_FIELDS = ("summary_use_proj", "use_cache", "is_decoder", "tie_word_embeddings")
_STR_FIELDS = ("hidden_act", "position_embedding_type", "summary_type", "summary_activation")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_types(kwargs: Mapping[str, Any]) -> None:
    """Raise SchemaError unless every known key of a config dict has its type and a sane range
    (run before anything is built from it: a num_hidden_layers of 10^9 must never reach a loop)."""
    problems = []
    for name, value in kwargs.items():
        if name in _INT_FIELDS:
            if not _is_int(value) and not (isinstance(value, float) and value.is_integer()):
                problems.append(f"{name} must be an integer, got {value!r}"[:200])
            elif name in SIZE_LIMITS and not 1 <= value <= SIZE_LIMITS[name]:
                problems.append(f"{name} must be in 1..{SIZE_LIMITS[name]}, got {value}")
            elif name == "pad_token_id" and not -1 <= value <= SIZE_LIMITS["vocab_size"]:
                problems.append(f"pad_token_id {value} is out of range")
        elif name in _FLOAT_FIELDS:
            if value is None and name == "classifier_dropout":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value!r}"[:200])
        elif name in _BOOL_FIELDS and not isinstance(value, bool):
            problems.append(f"{name} must be true or false, got {value!r}"[:200])
        elif name in _STR_FIELDS and not (isinstance(value, str) or (value is None and name == "summary_activation")):
            problems.append(f"{name} must be a string, got {value!r}"[:200])
    if problems:
        raise SchemaError("invalid ELECTRA config: " + "; ".join(problems))


def _labels(id2label: Any, num_labels: Any) -> tuple[str, ...] | None:
    """Label names from id2label (ids 0..n-1) or num_labels, bounded by MAX_LABELS."""
    if id2label:
        if not isinstance(id2label, Mapping) or len(id2label) > MAX_LABELS:
            raise SchemaError(f"config id2label must be a map of at most {MAX_LABELS} ids to names")
        try:
            ids = sorted(int(k) for k in id2label)
        except (TypeError, ValueError):
            raise SchemaError("config id2label keys must be the integers 0..n-1") from None
        if ids != list(range(len(ids))) or not all(isinstance(v, str) for v in id2label.values()):
            raise SchemaError("config id2label must map the ids 0..n-1 to label names (strings)")
        return tuple(id2label[k] for k in sorted(id2label, key=int))
    if num_labels is None:
        return None
    if not _is_int(num_labels) or not 1 <= num_labels <= MAX_LABELS:
        raise SchemaError(f"config num_labels must be an integer in 1..{MAX_LABELS}, got {num_labels!r}"[:200])
    return tuple(f"LABEL_{i}" for i in range(num_labels))


def read_config_text(path: str | Path) -> str:
    """The text of a config file: a regular file (no FIFO or device: never blocks, never endless)
    of at most MAX_CONFIG_BYTES, UTF-8."""
    raw = read_regular(path, MAX_CONFIG_BYTES, what="config", error=SchemaError)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"cannot read config {path}: not UTF-8 ({exc.reason})") from exc


@dataclass(frozen=True)
class ElectraConfig:
    """Hyper-parameters of one ELECTRA network (defaults are transformers' ElectraConfig)."""

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    summary_type: str = "first"
    summary_use_proj: bool = True
    summary_activation: str | None = "gelu"
    summary_last_dropout: float = 0.1
    classifier_dropout: float | None = None
    use_cache: bool = True
    is_decoder: bool = False
    tie_word_embeddings: bool = True
    #: Label names in id order; num_labels is their count (HF default: 2 labels).
    labels: tuple[str, ...] = ("LABEL_0", "LABEL_1")
    architectures: tuple[str, ...] = ()
    #: Keys of config.json we do not interpret, kept verbatim for the round trip.
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    # ---- derived -------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def has_embeddings_project(self) -> bool:
        return self.embedding_size != self.hidden_size

    def dims(self) -> dict[str, int]:
        """Symbol -> size, as used by the tensor table's shape templates."""
        return {
            "V": self.vocab_size,
            "E": self.embedding_size,
            "H": self.hidden_size,
            "I": self.intermediate_size,
            "P": self.max_position_embeddings,
            "T": self.type_vocab_size,
            "C": self.num_labels,
            "1": 1,
        }

    def replace(self, **changes: Any) -> "ElectraConfig":
        return dataclasses.replace(self, **changes)

    # ---- validation ----------------------------------------------------------------
    def validate(self, head: str | None = None) -> "ElectraConfig":
        """Raise SchemaError naming every setting the runtimes cannot reproduce exactly."""
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
            elif getattr(self, name) > SIZE_LIMITS[name]:
                problems.append(f"{name} {getattr(self, name)} is larger than the {SIZE_LIMITS[name]} accepted")
        if not 1 <= self.num_labels <= MAX_LABELS:
            problems.append(f"num_labels {self.num_labels} is outside 1..{MAX_LABELS}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            problems.append(f"hidden_act {self.hidden_act!r} is not supported (supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
        if self.summary_activation not in (*SUPPORTED_ACTIVATIONS, None):
            problems.append(f"summary_activation {self.summary_activation!r} is not supported")
        if self.position_embedding_type != "absolute":
            problems.append(
                f"position_embedding_type {self.position_embedding_type!r} is not supported "
                "(only 'absolute'; TF and Flax ignore relative positions, so they cannot be converted faithfully)"
            )
        if head == "multiple-choice" and self.summary_type not in SUPPORTED_SUMMARY_TYPES:
            problems.append(f"summary_type {self.summary_type!r} is not supported (supported: {SUPPORTED_SUMMARY_TYPES})")
        if head == "question-answering" and self.num_labels != 2:
            problems.append(f"question-answering needs exactly 2 labels (start, end), config has {self.num_labels}")
        if problems:
            raise SchemaError("invalid ELECTRA config:\n  " + "\n  ".join(problems))
        return self

    # ---- HF config.json ------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ElectraConfig":
        """Build from an HF config.json dict. ``num_labels`` alone gives LABEL_i names."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"config.json must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        if data.get("model_type", "electra") != "electra":
            raise SchemaError(f"config.json has model_type {data['model_type']!r}, expected 'electra'")
        known = {f.name for f in dataclasses.fields(cls)} - {"labels", "architectures", "extra"}
        kwargs: dict[str, Any] = {k: data.pop(k) for k in list(data) if k in known}
        check_types(kwargs)
        kwargs.update({k: int(v) for k, v in kwargs.items() if k in _INT_FIELDS})
        data.pop("label2id", None)
        labels = _labels(data.pop("id2label", None), data.pop("num_labels", None))
        if labels is not None:
            kwargs["labels"] = labels
        architectures = data.pop("architectures", None) or ()
        if not isinstance(architectures, (list, tuple)) or not all(isinstance(a, str) for a in architectures):
            raise SchemaError("config architectures must be a list of class names")
        kwargs["architectures"] = tuple(architectures)
        data.pop("model_type", None)
        kwargs["extra"] = tuple(sorted(data.items()))
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "ElectraConfig":
        try:
            data = json.loads(read_config_text(path))
        except (ValueError, RecursionError) as exc:
            raise SchemaError(f"cannot read config {path}: {exc}") from exc
        try:
            return cls.from_dict(data).validate()
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """HF config.json dict (id2label/label2id always written, so num_labels is explicit)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("labels", "extra"):
                out[f.name] = getattr(self, f.name)
        out["architectures"] = list(self.architectures)
        out["model_type"] = "electra"
        out["id2label"] = {str(i): name for i, name in enumerate(self.labels)}
        out["label2id"] = {name: i for i, name in enumerate(self.labels)}
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# Google Research sizes [google-research/electra util/training_utils.py]: heads = max(1, H // 64), I = 4H.
GOOGLE_SIZES = {
    "small": {"hidden_size": 256, "num_hidden_layers": 12, "embedding_size": 128},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "embedding_size": 768},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "embedding_size": 1024},
}


def google_config(size: str, *, generator_hidden_size: float | None = None, vocab_size: int = 30522) -> ElectraConfig:
    """The discriminator (or, with ``generator_hidden_size``, generator) config of a Google size."""
    if size not in GOOGLE_SIZES:
        raise SchemaError(f"unknown Google ELECTRA size {size!r} (known: {', '.join(GOOGLE_SIZES)})")
    spec = GOOGLE_SIZES[size]
    hidden = spec["hidden_size"]
    if generator_hidden_size is not None:
        hidden = int(round(hidden * generator_hidden_size))
    return ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=spec["embedding_size"],
        hidden_size=hidden,
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=google_num_heads(hidden),
        intermediate_size=4 * hidden,
    )


def google_num_heads(hidden_size: int) -> int:
    """The ELECTRA size rule for attention heads: max(1, hidden // 64)."""
    return max(1, hidden_size // 64)
