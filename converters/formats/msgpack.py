"""HF Flax checkpoints: read and write ``flax_model.msgpack`` with ``msgpack`` alone (no JAX, no Flax).

File format: flax.serialization's msgpack (converters/formats/msgpack_flax.py), one map
nested by module path with **no** ``params`` wrapper; transformers' ``save_pretrained``
writes it with ``flax.serialization.to_bytes(params)``. Sharded saves add
``flax_model.msgpack.index.json`` whose ``weight_map`` keys are ``/``-joined paths; they are
read, and written above ``--max-shard-size`` (default 10GB, as ``FlaxPreTrainedModel.save_pretrained``)
with ``flax_shard_checkpoint``'s split (engine/shards.py) over the params in the order a model
loaded from a msgpack file holds them: keys sorted at every level (a freshly initialised Flax
model holds them in creation order and may split elsewhere).

Native names are those paths joined with ``/``: the PyTorch module path with ``/`` for
``.``. Head models put the backbone under ``electra/``; FlaxElectraModel has no prefix.
Layout: flax.linen.Dense kernels are ``[in, out]`` (transposed to the canonical
``[out, in]``), LayerNorm weights are ``scale`` and biases ``bias``, embedding tables
``embedding`` ``[rows, width]`` (not transposed). A tied generator stores only
``generator_lm_head/bias`` (FlaxElectraTiedDense multiplies by the word-embedding table);
with ``tie_word_embeddings=false`` Flax also stores ``generator_lm_head/kernel`` ``[E, V]``.
A flax train state (parameters under a top-level ``params`` key) is read inside that key,
with a warning.

Where Flax computes differently from PyTorch: FlaxElectra's generator head applies
``hidden_act`` (PyTorch hard-codes gelu there), its SequenceSummary always pools token 0
(PyTorch honours ``summary_type``), and its ACT2FN knows fewer activations. Reading such a
file warns; writing one is refused with a SchemaError, because transformers' Flax class
would not compute what the source computes. (Flax's default token_type_ids are ONES, a
runtime trap: pass explicit ids to FlaxElectra*; our runtimes default to zeros like PyTorch.)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

from electra_bridge.schemas import ROWS, Checkpoint, ElectraConfig, SchemaError

from ..engine import shards
from ..engine.format import CheckpointFormat, NativeTensor, find_weights
from ..engine.rules import IDENTITY, TRANSPOSE, Ignored, Leaves, module_rules
from . import msgpack_flax, msgpack_lazy

log = logging.getLogger(__name__)

WEIGHTS, INDEX = "flax_model.msgpack", "flax_model.msgpack.index.json"
#: FlaxPreTrainedModel.save_pretrained's max_shard_size default (transformers 4.57)
DEFAULT_MAX_SHARD_SIZE = "10GB"
SEP = msgpack_flax.SEP
TRAIN_STATE = "params" + SEP
#: flax stores any of these (bfloat16 by its name, as jax's ml_dtypes type)
WRITABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))

#: flax.linen names by role; the untied decoder is a Dense kernel [E, V] <-> weight [V, E]
LEAVES = Leaves(sep=SEP, kernel=("kernel", TRANSPOSE), bias=("bias", IDENTITY), scale=("scale", IDENTITY),
                shift=("bias", IDENTITY), embedding=("embedding", IDENTITY), decoder=("kernel", TRANSPOSE))

#: canonical module -> Flax module: the same path, ``/``-joined (layer indices are string keys)
MODULES = tuple((module, module.replace(".", SEP)) for module in dict.fromkeys(row.module for row in ROWS))

#: native names without the ``electra/`` prefix of head models
RULES = module_rules(MODULES, LEAVES)

#: transformers' Flax params hold parameters only: nothing is dropped on purpose.
IGNORED: tuple[Ignored, ...] = ()

#: activation names transformers' Flax ACT2FN knows (modeling_flax_utils.py, 4.57.6); others raise KeyError there
FLAX_ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_pytorch_tanh", "tanh")


def flax_divergences(cfg: ElectraConfig, head: str) -> list[str]:
    """Settings under which transformers' Flax class computes something else than PT (and we) do, or cannot run."""
    out = []
    if cfg.hidden_act not in FLAX_ACTIVATIONS:
        out.append(f"hidden_act={cfg.hidden_act!r}: transformers' Flax ACT2FN has no such activation "
                   f"(it knows {', '.join(FLAX_ACTIVATIONS)})")
    if head == "multiple-choice" and cfg.summary_activation and cfg.summary_activation not in FLAX_ACTIVATIONS:
        out.append(f"summary_activation={cfg.summary_activation!r}: transformers' Flax ACT2FN has no such activation")
    if head in ("masked-lm", "causal-lm") and cfg.hidden_act != "gelu":
        out.append(f"hidden_act={cfg.hidden_act!r}: FlaxElectra's generator head applies hidden_act, PyTorch, "
                   "TensorFlow and electra-bridge hard-code exact gelu there")
    if head == "multiple-choice" and cfg.summary_type != "first":
        out.append(f"summary_type={cfg.summary_type!r}: FlaxElectraSequenceSummary always pools the first token, "
                   "PyTorch and electra-bridge honour summary_type")
    return out


def warn_divergences(cfg: ElectraConfig, head: str, source: str) -> ElectraConfig:
    for problem in flax_divergences(cfg, head):
        log.warning("%s: %s; outputs will match PyTorch, not FlaxElectra", source, problem)
    return cfg


def refuse_divergences(ckpt: Checkpoint) -> None:
    problems = flax_divergences(ckpt.config, ckpt.head)
    if problems:
        raise SchemaError("refusing to write flax_model.msgpack: transformers' Flax class would not compute what "
                          "this checkpoint computes:\n  " + "\n  ".join(problems)
                          + "\n  fix: keep this model in safetensors (or h5), or retrain with the Flax semantics")


def _unwrap_train_state(tensors: dict[str, NativeTensor], source: Path) -> dict[str, NativeTensor]:
    """A bare ``params`` wrapper (a flax train state, not a transformers save) is read inside."""
    if not tensors or not all(name.startswith(TRAIN_STATE) for name in tensors):
        return tensors
    log.warning("%s: parameters sit under a 'params' key (a flax train state, not a transformers save); "
                "reading inside it", source)
    short = {name: name.removeprefix(TRAIN_STATE) for name in tensors}
    return {short[name]: dataclasses.replace(t, name=short[name]) for name, t in tensors.items()}


class MsgpackCodec:
    def locate(self, path: Path) -> Path | None:
        return find_weights(path, (WEIGHTS, INDEX), (".msgpack", ".msgpack.index.json"))

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        """msgpack has no index of its own: the structure is walked once (msgpack_lazy.py), recording where
        each array's bytes are; each ``load()`` reads one array, so memory holds one array, not the file."""
        return _unwrap_train_state(msgpack_lazy.scan(weights), weights)

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint,
              max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> list[Path]:
        """``flax_model.msgpack`` (or its shards and index) byte-identical to FlaxElectra*.save_pretrained's
        (keys sorted at every level).

        A tied generator gets no ``generator_lm_head/kernel``; an untied one gets it [E, V]."""
        odd = [f"{t.name} is {t.dtype}" for t in tensors if t.dtype not in WRITABLE_DTYPES]
        if odd:
            raise SchemaError(f"{', '.join(odd)}; flax_model.msgpack is written as float32, float16 or bfloat16")
        ordered = sorted(tensors, key=lambda t: t.name.split(SEP))   # flatten_dict of a sorted tree
        return shards.write_sharded(out, WEIGHTS, INDEX, ordered, shards.parse_size(max_shard_size), shards.LEGACY,
                                    _write_file)


def _write_file(path: Path, tensors: Sequence[NativeTensor]) -> None:
    with open(path, "wb") as fh:
        msgpack_flax.write(fh, {t.name: t for t in tensors}, lambda t: t.load())


FORMAT = CheckpointFormat(name="msgpack", codec=MsgpackCodec(), rules=RULES, ignored=IGNORED, head_prefix="electra/",
                          options=(shards.MAX_SHARD_SIZE,), index_name=INDEX, read_config=warn_divergences,
                          check_writable=refuse_divergences)
