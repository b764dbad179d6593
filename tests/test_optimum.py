"""Optimum's ORTModel classes load and run our ONNX folders and match transformers.

Every head Optimum has a class for: base (ORTModelForFeatureExtraction), masked-lm,
causal-lm, sequence-classification, multiple-choice, token-classification and
question-answering (ORTModelFor<Task>). Optimum has no class for the discriminator
(``ElectraForPreTraining``); ORTModelForCustomTasks, its class for any graph, runs it. The
tokenizer is transformers' AutoTokenizer on our folder, as an Optimum user would load it.

causal-lm: ORTModelForCausalLM feeds ``input_ids`` and ``attention_mask`` only, so the causal-lm
graph holds ``token_type_ids`` as an input with a default (an initializer of zeros, which
ONNX Runtime lets a caller override); its graph has no past-key-value inputs, so it is loaded
with ``use_cache=False`` (Optimum's ``from_pretrained`` sets ``config.use_cache`` from that
argument, default True, whatever config.json says) and generates by re-running the prefix.
"""

import numpy as np
import pytest
from helpers import max_abs, spec

pytest.importorskip("onnxruntime")
optimum = pytest.importorskip("optimum.onnxruntime")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from electra_bridge.converters import convert

pytestmark = pytest.mark.oracle

#: head -> (Optimum class, transformers class, output names)
CLASSES = {
    "base": ("ORTModelForFeatureExtraction", "ElectraModel", ("last_hidden_state",)),
    "pretraining": ("ORTModelForCustomTasks", "ElectraForPreTraining", ("logits",)),
    "masked-lm": ("ORTModelForMaskedLM", "ElectraForMaskedLM", ("logits",)),
    "causal-lm": ("ORTModelForCausalLM", "ElectraForCausalLM", ("logits",)),
    "sequence-classification": ("ORTModelForSequenceClassification", "ElectraForSequenceClassification", ("logits",)),
    "multiple-choice": ("ORTModelForMultipleChoice", "ElectraForMultipleChoice", ("logits",)),
    "token-classification": ("ORTModelForTokenClassification", "ElectraForTokenClassification", ("logits",)),
    "question-answering": ("ORTModelForQuestionAnswering", "ElectraForQuestionAnswering",
                           ("start_logits", "end_logits")),
}
TEXTS = ["hello world", "the naive model is electra", "a"]
PAIRS = ["world hello", "electra", "the model is naive"]
#: fused graphs measured <= 1.2e-6 from transformers on the fixtures
ATOL = 1e-5


def encode(tokenizer, head: str) -> dict:
    """Tokenized probe texts: pairs (segment ids 0 and 1) where the head takes them; [B, K, S] for
    multiple-choice; no token_type_ids for causal-lm (what ORTModelForCausalLM feeds)."""
    if head == "multiple-choice":
        enc = tokenizer([t for t in TEXTS for _ in PAIRS], PAIRS * len(TEXTS), padding=True, return_tensors="pt")
        return {k: v.reshape(len(TEXTS), len(PAIRS), -1) for k, v in enc.items()}
    if head == "causal-lm":
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        return {k: v for k, v in enc.items() if k != "token_type_ids"}
    return dict(tokenizer(TEXTS, PAIRS, padding=True, return_tensors="pt"))


def load(head: str, folder):
    cls = getattr(optimum, CLASSES[head][0])
    return cls.from_pretrained(folder, use_cache=False) if head == "causal-lm" else cls.from_pretrained(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    cache = {}

    def get(head, **write_options):
        key = (head, tuple(sorted(write_options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(head) / "onnx"
            assert convert(spec.HF_SAFETENSORS / head, out, "onnx", write_options=write_options).report.ok
            cache[key] = out
        return cache[key]
    return get


@pytest.mark.parametrize("head", CLASSES)
def test_optimum_runs_every_head_like_transformers(head, folders):
    folder = folders(head)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    enc = encode(tokenizer, head)
    ours = load(head, folder)(**enc)
    with torch.no_grad():
        theirs = getattr(transformers, CLASSES[head][1]).from_pretrained(spec.HF_SAFETENSORS / head).eval()(**enc)
    for name in CLASSES[head][2]:
        got, want = np.asarray(ours[name]), theirs[name].numpy()
        assert got.shape == want.shape, name
        print(f"{head} {name}: max_abs {max_abs(got, want):.2e}")
        assert max_abs(got, want) <= ATOL, name


def test_optimum_ignores_the_hidden_state_outputs(folders):
    """An export with --hidden-states still loads in Optimum's task classes (the extra outputs are ignored)."""
    head = "sequence-classification"
    folder = folders(head, hidden_states=True)
    enc = encode(transformers.AutoTokenizer.from_pretrained(folder), head)
    ours = load(head, folder)(**enc).logits
    plain = load(head, folders(head))(**enc).logits
    assert max_abs(ours.numpy(), plain.numpy()) <= ATOL


def test_causal_lm_token_type_ids_default_to_zeros_and_can_be_given(folders):
    """The causal-lm graph runs without token_type_ids (zeros) and still takes them when fed."""
    import onnxruntime as ort

    folder = folders("causal-lm")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [i.name for i in session.get_overridable_initializers()] == ["token_type_ids"]
    ids = np.array([[1, 5, 7, 9, 2], [1, 6, 8, 2, 0]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}
    (default,) = session.run(["logits"], feed)
    (zeros,) = session.run(["logits"], {**feed, "token_type_ids": np.zeros_like(ids)})
    (ones,) = session.run(["logits"], {**feed, "token_type_ids": np.ones_like(ids)})
    assert np.array_equal(default, zeros) and max_abs(ones, zeros) > 1e-3
    model = transformers.ElectraForCausalLM.from_pretrained(spec.HF_SAFETENSORS / "causal-lm").eval()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(feed["attention_mask"]),
                     token_type_ids=torch.ones_like(torch.from_numpy(ids))).logits.numpy()
    assert max_abs(ones, want) <= ATOL


def test_optimum_causal_lm_generates_what_transformers_generates(folders):
    folder = folders("causal-lm")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    enc = encode(tokenizer, "causal-lm")
    enc = {k: v[1:2] for k, v in enc.items()}                            # one unpadded row
    ours = load("causal-lm", folder).generate(**enc, max_new_tokens=5, do_sample=False)
    model = transformers.ElectraForCausalLM.from_pretrained(spec.HF_SAFETENSORS / "causal-lm").eval()
    with torch.no_grad():
        theirs = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert ours.shape[1] == enc["input_ids"].shape[1] + 5
    assert ours.tolist() == theirs.tolist()
