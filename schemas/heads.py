"""HEADS: the eight ELECTRA heads as data -- tensor groups, HF class, detection marker, input
rank, attention direction, output function and output shapes. Detection, config-for-head and
the forward pass's head dispatch all read this one table.

Output shape symbols: B batch, K choices, S sequence, H hidden, V vocab, C labels.
Every head also yields the per-layer hidden states (embedding output + one per layer,
each [B, S, H]; [B*K, S, H] for multiple-choice), which verification uses for drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import ElectraConfig
from .errors import SchemaError
from .tensors import BACKBONE_GROUPS, expected_shapes


@dataclass(frozen=True)
class Head:
    name: str
    hf_class: str
    #: tensor groups of schemas.tensors.ROWS this head needs beside the backbone
    groups: tuple[str, ...]
    #: output name -> symbolic shape
    outputs: tuple[tuple[str, tuple[str, ...]], ...]
    #: canonical tensors whose presence marks this head in a file without ``architectures``;
    #: the head matching the most markers wins (multiple-choice's ``classifier.weight`` is
    #: also token-classification's, so multiple-choice lists ``sequence_summary`` too)
    markers: tuple[str, ...]
    #: the name of the function in runtimes/forward.py HEAD_FUNCTIONS that computes the outputs
    output_fn: str
    #: inputs carry a choices axis: [B, K, S]
    choices: bool = False
    #: left-to-right attention (the causal mask); config.json gets is_decoder=true
    causal: bool = False

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)

    @property
    def all_groups(self) -> tuple[str, ...]:
        return BACKBONE_GROUPS + self.groups


HEADS: dict[str, Head] = {
    h.name: h
    for h in (
        Head("base", "ElectraModel", (), (("last_hidden_state", ("B", "S", "H")),), (), "last_hidden_state"),
        Head("pretraining", "ElectraForPreTraining", ("discriminator",), (("logits", ("B", "S")),),
             ("discriminator_predictions.dense.weight",), "discriminator_logits"),
        Head("masked-lm", "ElectraForMaskedLM", ("generator",), (("logits", ("B", "S", "V")),),
             ("generator_predictions.dense.weight",), "generator_logits"),
        Head("causal-lm", "ElectraForCausalLM", ("generator",), (("logits", ("B", "S", "V")),),
             ("generator_predictions.dense.weight",), "generator_logits", causal=True),
        Head("sequence-classification", "ElectraForSequenceClassification", ("classification_head",),
             (("logits", ("B", "C")),), ("classifier.out_proj.weight",), "classification_logits"),
        Head("multiple-choice", "ElectraForMultipleChoice", ("sequence_summary",), (("logits", ("B", "K")),),
             ("sequence_summary.summary.weight", "classifier.weight"), "choice_logits", choices=True),
        Head("token-classification", "ElectraForTokenClassification", ("token_classifier",),
             (("logits", ("B", "S", "C")),), ("classifier.weight",), "token_logits"),
        Head("question-answering", "ElectraForQuestionAnswering", ("qa",),
             (("start_logits", ("B", "S")), ("end_logits", ("B", "S"))), ("qa_outputs.weight",), "span_logits"),
    )
}


def get_head(name: str) -> Head:
    try:
        return HEADS[name]
    except KeyError:
        raise SchemaError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}") from None


def head_for_architecture(architectures: Iterable[str]) -> str | None:
    """The head an HF ``architectures`` list names (a ``TF``/``Flax`` class prefix is accepted), or None."""
    by_class = {h.hf_class: h.name for h in HEADS.values()}
    for arch in architectures:
        for prefix in ("", "TF", "Flax"):
            if arch.startswith(prefix) and arch[len(prefix):] in by_class:
                return by_class[arch[len(prefix):]]
    return None


def config_for_head(cfg: ElectraConfig, head: str) -> ElectraConfig:
    """The config a transformers class for ``head`` expects (architectures, is_decoder)."""
    spec = get_head(head)
    return cfg.replace(architectures=(spec.hf_class,), is_decoder=spec.causal)


def head_shapes(cfg: ElectraConfig, head: str) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every tensor ``head`` needs (tied aliases excluded)."""
    return expected_shapes(cfg, get_head(head).all_groups)


def output_shape(cfg: ElectraConfig, head: str, output: str, batch: int, seq: int, choices: int = 0) -> tuple[int, ...]:
    sizes = {"B": batch, "S": seq, "K": choices, "H": cfg.hidden_size, "V": cfg.vocab_size, "C": cfg.num_labels}
    return tuple(sizes[s] for s in dict(get_head(head).outputs)[output])


def runnable_heads(head: str) -> tuple[str, ...]:
    """Heads a checkpoint of ``head`` can compute: its own and, from its backbone, ``base``."""
    return ("base", head) if head != "base" else ("base",)


def detect_head(names: Iterable[str], cfg: ElectraConfig) -> str:
    """The head whose ``markers`` the canonical ``names`` hold most of (``base`` when none).

    Heads with equal markers (masked-lm, causal-lm) are told apart by ``cfg.is_decoder``.
    """
    present = set(names)
    scored = [(sum(m in present for m in h.markers), h) for h in HEADS.values()
              if h.markers and all(m in present for m in h.markers)]
    if not scored:
        return "base"
    best = max(score for score, _ in scored)
    tied = [h for score, h in scored if score == best]
    return next((h.name for h in tied if h.causal == cfg.is_decoder), tied[0].name)
