"""Keras 3 ``model.keras``: the whole ELECTRA graph of a head, loadable with Keras alone.

Written: the functional model of converters/formats/keras_model.py (standard layers and
``keras.ops`` only; ``keras.saving.load_model`` needs no electra-bridge and no
``safe_mode=False``), inputs ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (int32,
``[B, S]``; ``[B, K, S]`` for multiple-choice; every axis dynamic), outputs the head's
(``logits``, ``last_hidden_state``, ``start_logits`` / ``end_logits``) plus ``hidden_states.i``.
The writer runs the built model once on the probe batch against the numpy reference and
refuses to leave a file whose graph computes something else.

A CheckpointFormat, not an ArtifactFormat: the file holds every weight by layer and variable
name, so it reads back (``--from keras``) into the canonical checkpoint, and verify then runs
what was read. Reading needs no Keras: a ``.keras`` file is a zip holding the model's
``config.json`` and ``model.weights.h5``, where Keras stores each layer's variables as
``layers/<group>/vars/<i>``, the group being the layer's snake-cased class name made unique in
``model.layers`` order (``dense``, ``dense_1``, ...). The codec replays that naming over the
zip's config to give each dataset its native name ``<layer name>/<variable name>``
(``encoder-layer-0-attention-self-query/kernel``); a dataset it cannot name is listed under its
h5 path, so strict accounting reports it.

Layout: Dense kernels ``[in, out]`` (transposed to canonical ``[out, in]``), LayerNormalization
``gamma`` / ``beta``, Embedding ``embeddings`` ``[rows, width]``. The LM head is a Dense: when the
config ties it to the word table its kernel is a copy of that table, checked equal on reading
and dropped. Variables are float32 (a float16 or bfloat16 checkpoint is widened, exactly).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from electra_bridge.schemas import ROWS, Checkpoint, FormatError, SchemaError

from ..engine.format import CheckpointFormat, NativeTensor, find_weights
from ..engine.rules import IDENTITY, TRANSPOSE, Leaves, module_rules
from . import h5_keras, keras_model

WEIGHTS = "model.keras"
CONFIG_MEMBER, WEIGHTS_MEMBER = "config.json", "model.weights.h5"
#: Keras variable names by position in ``layer.weights``, for the layer classes the graph uses
VARIABLE_NAMES = {"Dense": ("kernel", "bias"), "Embedding": ("embeddings",), "LayerNormalization": ("gamma", "beta")}
_OPS_MODULE = "keras.src.ops"
_DATASET = re.compile(r"^layers/([^/]+)/vars/(\d+)$")

LEAVES = Leaves(sep="/", kernel=("kernel", TRANSPOSE), bias=("bias", IDENTITY), scale=("gamma", IDENTITY),
                shift=("beta", IDENTITY), embedding=("embeddings", IDENTITY), decoder=("kernel", TRANSPOSE))

#: canonical module -> its Keras layer (``-`` for ``.``)
RULES = module_rules(((m, keras_model.layer_name(m)) for m in dict.fromkeys(row.module for row in ROWS)), LEAVES)
TIED_KERNEL, WORD_TABLE = "generator_lm_head/kernel", "embeddings-word_embeddings/embeddings"


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    return re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()


def weight_groups(model_config: dict) -> dict[str, tuple[str, str]]:
    """h5 group -> (layer name, layer class), replaying Keras' naming of ``model.layers``
    (every entry of the functional config except the ``keras.ops`` operations)."""
    used: dict[str, int] = {}
    out = {}
    for entry in model_config["config"]["layers"]:
        if str(entry.get("module", "")).startswith(_OPS_MODULE):
            continue
        base = _snake_case(entry["class_name"])
        count = used.get(base, 0)
        used[base] = count + 1
        out[base if count == 0 else f"{base}_{count}"] = (entry["config"]["name"], entry["class_name"])
    return out


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"{path} is not a Keras 3 .keras file (not a zip archive): {exc}") from exc


def _load(path: Path, dataset: str) -> np.ndarray:
    import h5py

    with _open_zip(path) as z, z.open(WEIGHTS_MEMBER) as fh, h5py.File(fh, "r") as f:
        return f[dataset][()]


class KerasCodec:
    def locate(self, path: Path) -> Path | None:
        return find_weights(path, (WEIGHTS,), (".keras",))

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        import h5py

        with _open_zip(weights) as z:
            names = set(z.namelist())
            if not {CONFIG_MEMBER, WEIGHTS_MEMBER} <= names:
                raise FormatError(f"{weights} lacks {CONFIG_MEMBER} or {WEIGHTS_MEMBER}: not a Keras 3 .keras file")
            try:
                groups = weight_groups(json.loads(z.read(CONFIG_MEMBER)))
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(f"{weights}: its {CONFIG_MEMBER} is not a functional model's config") from exc
            found: dict[str, NativeTensor] = {}
            with z.open(WEIGHTS_MEMBER) as fh, h5py.File(fh, "r") as f:
                datasets = []

                def visit(p, obj):
                    if isinstance(obj, h5py.Dataset):
                        h5_keras.check_dataset(weights, obj)   # no external/virtual storage, no plugin filters
                        datasets.append((p, obj.shape, obj.dtype))
                f.visititems(visit)
        for path, shape, dtype in datasets:
            found[self._name(path, groups)] = NativeTensor(self._name(path, groups), tuple(shape), dtype,
                                                           lambda p=path: _load(weights, p))
        return found

    @staticmethod
    def _name(dataset: str, groups: dict[str, tuple[str, str]]) -> str:
        match = _DATASET.match(dataset)
        if match and match.group(1) in groups:
            layer, cls = groups[match.group(1)]
            names = VARIABLE_NAMES.get(cls, ())
            if int(match.group(2)) < len(names):
                return f"{layer}/{names[int(match.group(2))]}"
        return dataset

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint) -> list[Path]:
        model = keras_model.build(ckpt.config, ckpt.head)
        variables = keras_model.variables(model)
        assigned = set()
        for tensor in tensors:
            arr = np.asarray(tensor.load(), dtype=np.float32)
            variables[tensor.name].assign(arr)
            assigned.add(tensor.name)
            if tensor.name == WORD_TABLE and TIED_KERNEL in variables and ckpt.config.tie_word_embeddings:
                variables[TIED_KERNEL].assign(np.ascontiguousarray(arr.T))
                assigned.add(TIED_KERNEL)
        left = sorted(set(variables) - assigned)
        if left:
            raise SchemaError(f"no checkpoint tensor for Keras variables {', '.join(left)}")
        check_graph(model, ckpt)
        model.save(out / WEIGHTS)
        return [out / WEIGHTS]


def check_graph(model, ckpt: Checkpoint) -> None:
    """The built graph against the numpy reference on the probe batch (every runnable head output)."""
    from electra_bridge.runtimes import CheckpointRunner, probe_batch, tolerance

    batch = probe_batch(ckpt.config, ckpt.head)
    ours, reference = keras_model.run(model, batch), CheckpointRunner(ckpt).run(ckpt.head, batch)
    atol, rtol = tolerance("keras", "float32")
    states = {keras_model.hidden_state_name(i): s for i, s in enumerate(reference.hidden_states)}
    expected = {**reference.outputs, **states}
    for name, want in expected.items():
        got = ours[name].reshape(want.shape) if ours[name].size == want.size else ours[name]  # MC: [B, K, S, H]
        if got.shape != want.shape or not np.all(np.abs(got - want) <= atol + rtol * np.abs(want)):
            worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
            raise SchemaError(f"the Keras graph of {ckpt.head} computes {name} {worst:.3g} away from the reference "
                              f"(tolerance {atol:g} + {rtol:g}|x|); refusing to write it")


FORMAT = CheckpointFormat(name="keras", codec=KerasCodec(), rules=RULES, extra="keras")
