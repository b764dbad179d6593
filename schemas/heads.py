"""HEADS: the eight ELECTRA heads as data -- tensor groups, HF class, outputs and shapes.

Output shape symbols: B batch, K choices, S sequence, H hidden, V vocab, C labels.
Every head also yields the per-layer hidden states (embedding output + one per layer,
each [B, S, H]; [B*K, S, H] for multiple-choice), which verification uses for drift.
"""

from __future__ import annotations

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
    description: str

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)

    @property
    def all_groups(self) -> tuple[str, ...]:
        return BACKBONE_GROUPS + self.groups

    @property
    def choices(self) -> bool:
        """Inputs carry a choices axis: [B, K, S]."""
        return self.name == "multiple-choice"


HEADS: dict[str, Head] = {
    h.name: h
    for h in (
        Head("base", "ElectraModel", (), (("last_hidden_state", ("B", "S", "H")),),
             "the bare encoder"),
        Head("pretraining", "ElectraForPreTraining", ("discriminator",), (("logits", ("B", "S")),),
             "discriminator: replaced-token detection, one logit per token"),
        Head("masked-lm", "ElectraForMaskedLM", ("generator",), (("logits", ("B", "S", "V")),),
             "generator: masked language model, decoder tied to the word embeddings"),
        Head("causal-lm", "ElectraForCausalLM", ("generator",), (("logits", ("B", "S", "V")),),
             "the generator head run left-to-right (causal attention mask)"),
        Head("sequence-classification", "ElectraForSequenceClassification", ("classification_head",),
             (("logits", ("B", "C")),), "[CLS] -> dense -> gelu -> out_proj"),
        Head("multiple-choice", "ElectraForMultipleChoice", ("sequence_summary",), (("logits", ("B", "K")),),
             "SequenceSummary over each choice -> one score per choice"),
        Head("token-classification", "ElectraForTokenClassification", ("token_classifier",),
             (("logits", ("B", "S", "C")),), "one linear layer per token"),
        Head("question-answering", "ElectraForQuestionAnswering", ("qa",),
             (("start_logits", ("B", "S")), ("end_logits", ("B", "S"))), "span start/end logits"),
    )
}

HEAD_BY_CLASS = {h.hf_class: h.name for h in HEADS.values()}


def get_head(name: str) -> Head:
    try:
        return HEADS[name]
    except KeyError:
        raise SchemaError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}") from None


def head_shapes(cfg: ElectraConfig, head: str) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every tensor ``head`` needs (tied aliases excluded)."""
    return expected_shapes(cfg, get_head(head).all_groups)


def output_shape(cfg: ElectraConfig, head: str, output: str, batch: int, seq: int, choices: int = 0) -> tuple[int, ...]:
    sizes = {"B": batch, "S": seq, "K": choices, "H": cfg.hidden_size, "V": cfg.vocab_size, "C": cfg.num_labels}
    return tuple(sizes[s] for s in dict(get_head(head).outputs)[output])


def runnable_heads(head: str) -> tuple[str, ...]:
    """Heads a checkpoint of ``head`` can compute: its own and, from its backbone, ``base``."""
    return ("base", head) if head != "base" else ("base",)


def detect_head(names: set[str], cfg: ElectraConfig) -> str:
    """Guess the head from canonical tensor names when ``architectures`` is silent.

    Ambiguous pairs are resolved by the config: masked-lm vs causal-lm by is_decoder;
    the ``classifier.weight`` of multiple-choice [1,H] vs token-classification [C,H]
    by the presence of ``sequence_summary``.
    """
    if "discriminator_predictions.dense.weight" in names:
        return "pretraining"
    if "generator_predictions.dense.weight" in names:
        return "causal-lm" if cfg.is_decoder else "masked-lm"
    if "classifier.out_proj.weight" in names:
        return "sequence-classification"
    if "sequence_summary.summary.weight" in names:
        return "multiple-choice"
    if "qa_outputs.weight" in names:
        return "question-answering"
    if "classifier.weight" in names:
        return "token-classification"
    return "base"
