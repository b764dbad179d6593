"""The canonical tensor table: every tensor an ELECTRA model can have, one row each.

LAYOUT CONTRACT (the one layout of the whole project):
  * dense kernels are ``[out_features, in_features]`` -- torch.nn.Linear's layout --
    so ``y = x @ W.T + b``. Formats that store ``[in, out]`` (TF, Flax, Google TF1)
    transpose in their converter, never in a runtime.
  * embedding tables are ``[rows, width]``; LayerNorm weight/bias are ``[width]``.
  * dtype: float32 arrays (float16 allowed; bfloat16 is widened to float32 on read).

Names are HF PyTorch state-dict keys without the ``electra.`` prefix that head models
add. ``{layer}`` is the only placeholder. Shapes are tuples of symbols from
``ElectraConfig.dims()``: V vocab, E embedding, H hidden, I intermediate, P positions,
T token types, C labels, 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import ElectraConfig
from .errors import SchemaError


@dataclass(frozen=True)
class Row:
    """One canonical tensor: name template, symbolic shape, and the group it belongs to."""

    template: str
    shape: tuple[str, ...]
    group: str
    #: what the tensor is to its module, which is how formats name and lay it out:
    #: "kernel" / "bias" of a dense layer, "scale" / "shift" of a LayerNorm, "embedding"
    #: table, "decoder" (the untied MLM output matrix [V, E], stored like a kernel)
    role: str
    #: "project": present only when embedding_size != hidden_size;
    #: "untied": present only when tie_word_embeddings is False.
    when: str | None = None

    @property
    def module(self) -> str:
        """The module path: the template without its last component (``.weight`` / ``.bias``)."""
        return self.template.rsplit(".", 1)[0]


def _dense(prefix: str, out_dim: str, in_dim: str, group: str, when: str | None = None) -> tuple[Row, Row]:
    return (Row(f"{prefix}.weight", (out_dim, in_dim), group, "kernel", when),
            Row(f"{prefix}.bias", (out_dim,), group, "bias", when))


def _layer_norm(prefix: str, dim: str, group: str) -> tuple[Row, Row]:
    return (Row(f"{prefix}.weight", (dim,), group, "scale"), Row(f"{prefix}.bias", (dim,), group, "shift"))


_L = "encoder.layer.{layer}"

ROWS: tuple[Row, ...] = (
    # -- embeddings (group "embeddings") -------------------------------------------
    Row("embeddings.word_embeddings.weight", ("V", "E"), "embeddings", "embedding"),
    Row("embeddings.position_embeddings.weight", ("P", "E"), "embeddings", "embedding"),
    Row("embeddings.token_type_embeddings.weight", ("T", "E"), "embeddings", "embedding"),
    *_layer_norm("embeddings.LayerNorm", "E", "embeddings"),
    *_dense("embeddings_project", "H", "E", "embeddings", when="project"),
    # -- one encoder layer (group "layer"), repeated num_hidden_layers times ------
    *_dense(f"{_L}.attention.self.query", "H", "H", "layer"),
    *_dense(f"{_L}.attention.self.key", "H", "H", "layer"),
    *_dense(f"{_L}.attention.self.value", "H", "H", "layer"),
    *_dense(f"{_L}.attention.output.dense", "H", "H", "layer"),
    *_layer_norm(f"{_L}.attention.output.LayerNorm", "H", "layer"),
    *_dense(f"{_L}.intermediate.dense", "I", "H", "layer"),
    *_dense(f"{_L}.output.dense", "H", "I", "layer"),
    *_layer_norm(f"{_L}.output.LayerNorm", "H", "layer"),
    # -- heads ------------------------------------------------------------------------
    *_dense("discriminator_predictions.dense", "H", "H", "discriminator"),
    *_dense("discriminator_predictions.dense_prediction", "1", "H", "discriminator"),
    *_dense("generator_predictions.dense", "E", "H", "generator"),
    *_layer_norm("generator_predictions.LayerNorm", "E", "generator"),
    Row("generator_lm_head.weight", ("V", "E"), "generator", "decoder", when="untied"),
    Row("generator_lm_head.bias", ("V",), "generator", "bias"),
    *_dense("classifier.dense", "H", "H", "classification_head"),
    *_dense("classifier.out_proj", "C", "H", "classification_head"),
    *_dense("sequence_summary.summary", "H", "H", "sequence_summary"),
    *_dense("classifier", "1", "H", "sequence_summary"),
    *_dense("classifier", "C", "H", "token_classifier"),
    *_dense("qa_outputs", "C", "H", "qa"),
)

#: Aliases a tied model shares: alias -> the tensor it is the same storage as.
#: Canonical checkpoints never store the alias of a tied model; writers of formats that
#: want both copies (pytorch_model.bin) write both, readers check they are equal.
TIES: dict[str, str] = {"generator_lm_head.weight": "embeddings.word_embeddings.weight"}

BACKBONE_GROUPS = ("embeddings", "layer")


def _present(row: Row, cfg: ElectraConfig) -> bool:
    if row.when == "project":
        return cfg.has_embeddings_project
    if row.when == "untied":
        return not cfg.tie_word_embeddings
    return True


def expected_shapes(cfg: ElectraConfig, groups: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Canonical name -> concrete shape for every tensor of ``groups`` under ``cfg``."""
    dims = cfg.dims()
    wanted = set(groups)
    out: dict[str, tuple[int, ...]] = {}
    for row in ROWS:
        if row.group not in wanted or not _present(row, cfg):
            continue
        shape = tuple(dims[s] for s in row.shape)
        if "{layer}" in row.template:
            for i in range(cfg.num_hidden_layers):
                out[row.template.format(layer=i)] = shape
        else:
            out[row.template] = shape
    return out


def check_tensors(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], *, source: str,
                  unexpected_ok: bool = False, hint: str = "") -> None:
    """Strict accounting: raise one SchemaError listing missing, unexpected and mis-shaped names."""
    missing = sorted(set(expected) - set(found))
    unexpected = [] if unexpected_ok else sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{n}: file has {list(found[n])}, config needs {list(expected[n])}"
        for n in set(expected) & set(found)
        if tuple(found[n]) != tuple(expected[n])
    )
    if not (missing or unexpected or misshaped):
        return
    parts = [f"{source} does not match the canonical ELECTRA schema:"]
    for title, names, sep in (("missing", missing, ", "), ("unexpected", unexpected, ", "),
                              ("wrong shape", misshaped, "; ")):
        if names:
            parts.append(f"  {title} ({len(names)}): " + sep.join(names[:12]) + (" ..." if len(names) > 12 else ""))
    if hint:
        parts.append(f"  fix: {hint}")
    raise SchemaError("\n".join(parts))
