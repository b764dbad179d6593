"""The numpy reference forward pass against transformers: golden files and a live oracle."""

import numpy as np
import pytest

from helpers import HEADS, max_abs, spec

from electra_bridge.converters import read
from electra_bridge.runtimes import CheckpointRunner, probe_batch
from electra_bridge.schemas import ElectraConfig

TOL = 1e-5


def test_probe_batch_exercises_padding_and_both_segments():
    batch = probe_batch(ElectraConfig(**spec.CONFIG), "base")
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(lengths) and lengths.min() < batch["input_ids"].shape[1]
    assert set(np.unique(batch["token_type_ids"])) == {0, 1}
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
    assert probe_batch(ElectraConfig(**spec.CONFIG), "multiple-choice")["input_ids"].ndim == 3


def test_causal_lm_ignores_future_tokens():
    ckpt = read(spec.HF_SAFETENSORS / "causal-lm")
    runner = CheckpointRunner(ckpt)
    batch = probe_batch(ckpt.config, "causal-lm")
    changed = {k: v.copy() for k, v in batch.items()}
    changed["input_ids"][0, -1] = (changed["input_ids"][0, -1] + 1) % ckpt.config.vocab_size
    a, b = runner.run("causal-lm", batch).outputs["logits"], runner.run("causal-lm", changed).outputs["logits"]
    assert max_abs(a[0, :-1], b[0, :-1]) == 0.0
    assert max_abs(a[0, -1], b[0, -1]) > 1e-3


def test_padding_does_not_leak_into_real_tokens():
    ckpt = read(spec.HF_SAFETENSORS / "token-classification")
    runner = CheckpointRunner(ckpt)
    batch = probe_batch(ckpt.config, "token-classification")
    noisy = {k: v.copy() for k, v in batch.items()}
    noisy["input_ids"][batch["attention_mask"] == 0] = 7  # change only padded positions
    a, b = runner.run("token-classification", batch), runner.run("token-classification", noisy)
    real = batch["attention_mask"] == 1
    assert max_abs(a.outputs["logits"][real], b.outputs["logits"][real]) <= 1e-6


@pytest.mark.oracle
@pytest.mark.parametrize("head", HEADS)
def test_numpy_equals_live_transformers(head):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = getattr(transformers, spec.HF_CLASS[head]).from_pretrained(spec.HF_SAFETENSORS / head).eval()
    ckpt = read(spec.HF_SAFETENSORS / head)
    for seed in (1, 2):  # probe batches the golden files were not made from
        batch = probe_batch(ckpt.config, head, batch=2 + seed, seq=6 + 5 * seed, seed=seed)
        with torch.no_grad():
            theirs = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        ours = CheckpointRunner(ckpt).run(head, batch)
        for name, value in ours.outputs.items():
            assert max_abs(value, theirs[name].numpy()) <= TOL, (name, seed)
