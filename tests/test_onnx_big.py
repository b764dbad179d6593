"""ONNX above 2 GB: a synthetic ELECTRA of 2.18 GB (a 600,000 x 768 word table, 1.84 GB, and
electra-base's twelve layers) is converted with the real command, written with ONNX external data (``model.onnx`` +
``model.onnx.data``), and verified by ONNX Runtime against the numpy reference. Slow (several GB
of memory and disk): ``pytest -m slow tests/test_onnx_big.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli

from electra_bridge.converters import write
from electra_bridge.schemas import Checkpoint, ElectraConfig, head_shapes

pytestmark = pytest.mark.requires("onnx")

VOCAB, EMBEDDING = 600_000, 768     # with 12 base-size layers: 2.18 GB, past protobuf's 2 GiB per message


def big_checkpoint() -> Checkpoint:
    cfg = ElectraConfig(vocab_size=VOCAB, embedding_size=EMBEDDING, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=64)
    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape in head_shapes(cfg, "base").items():
        if name.endswith("LayerNorm.weight"):
            tensors[name] = np.ones(shape, np.float32)
        else:
            tensors[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return Checkpoint(cfg, "base", tensors).validate()


@pytest.mark.slow
def test_onnx_past_2gb_uses_external_data_and_verifies(tmp_path):
    write(big_checkpoint(), tmp_path / "src", "safetensors")
    proc = run_cli("convert", tmp_path / "src", tmp_path / "onnx", "--to", "onnx", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["outputs"][0]["report"]
    assert report["ok"] and report["heads"]["base"]["ok"]
    graph, data = tmp_path / "onnx" / "model.onnx", tmp_path / "onnx" / "model.onnx.data"
    assert data.stat().st_size > 2 * 1024**3 > graph.stat().st_size
    print(f"model.onnx {graph.stat().st_size / 1e6:.1f} MB, model.onnx.data {data.stat().st_size / 1e9:.2f} GB, "
          f"max_abs {report['heads']['base']['outputs']['last_hidden_state']['max_abs']:.2e}")


def test_a_single_tensor_past_protobufs_limit_is_one_clear_error(tmp_path, monkeypatch):
    """A word table of 2 GiB or more cannot be one TensorProto: refused naming it (not protobuf's EncodeError)."""
    from electra_bridge.converters import convert
    from electra_bridge.converters.formats import onnx as onnx_format
    from electra_bridge.schemas import SchemaError
    from helpers import spec

    monkeypatch.setattr(onnx_format, "MAX_TENSOR_BYTES", 6_000)   # the word table: 108 x 16 x 4 = 6,912 bytes
    with pytest.raises(SchemaError, match=r"embeddings\.word_embeddings\.weight is .* GiB"):
        convert(spec.HF_SAFETENSORS / "base", tmp_path / "out", "onnx")
    assert not (tmp_path / "out").exists()
