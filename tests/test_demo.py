"""`electra-bridge demo`: the bundled fixture through every installed format, every hop verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from electra_bridge.converters import FORMATS, cli, demo, get_format


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory):
    """The real command, once, in a subprocess: (exit code, parsed JSON, output folder)."""
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    proc = run_cli("demo", "--out", out, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    # the first thing a new user runs: no framework start-up noise, no staging folder named
    for noise in ("absl", "cuInit", "oneDNN", "cuda", "libtpu", ".partial-"):
        assert noise not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), out


@pytest.mark.requires("all")
def test_every_registered_format_is_a_verified_hop(full_demo):
    code, result, _ = full_demo
    assert code == 0 and result["ok"], json.dumps([(h["hop"], h["format"], h["result"], h["reason"])
                                                  for h in result["hops"]], indent=1)
    assert result["source"] == "bundled fixture fixtures/hf/pretraining"
    by_format = {}
    for hop in result["hops"]:
        by_format.setdefault(hop["format"], []).append(hop)
        if hop["result"] == "ok":
            assert hop["report"]["ok"] is True and hop["max_abs"] <= hop["report"]["atol"] + 1e-12
            assert Path(hop["path"]).is_dir()
        elif hop["result"] == "skipped":
            assert hop["reason"], hop            # a skip always says why
    holds_the_head = [f for f in FORMATS if "pretraining" in get_format(f).heads]   # keras-hub holds base only
    assert set(holds_the_head) <= {*demo.CHAIN, *demo.ARTIFACTS}, "a registered format the demo never visits"
    for fmt in (*demo.CHAIN, *demo.ARTIFACTS):
        assert fmt in by_format, f"{fmt} has no row"
        if fmt in FORMATS:   # registered here: it must have really run (not skipped for a missing framework)
            assert any(h["result"] == "ok" for h in by_format[fmt]), by_format[fmt]
    assert any(h["hop"] == "round trip" and h["result"] == "ok" for h in result["hops"])


@pytest.mark.requires("onnx")
def test_every_artifact_hop_is_compared_layer_by_layer(full_demo):
    _, result, _ = full_demo
    checked = set()
    for hop in result["hops"]:
        if hop["hop"] == "artifact" and hop["result"] == "ok":   # onnx through --hidden-states
            drift = hop["report"]["heads"]["pretraining"]["hidden_state_drift"]
            assert list(drift)[:2] == ["embeddings", "layer 0"], (hop["format"], list(drift))
            checked.add(hop["format"])
    assert "onnx" in checked


def test_perturbed_copy_is_caught_at_its_layer(full_demo):
    _, result, _ = full_demo
    (hop,) = [h for h in result["hops"] if h["hop"] == "perturbed"]
    assert hop["result"] == "caught at layer 1"
    assert hop["report"]["ok"] is False and hop["report"]["first_divergence"] == "layer 1"


@pytest.mark.requires("plot")
def test_report_and_plot_written(full_demo):
    _, result, out = full_demo
    saved = json.loads((out / "report.json").read_text())
    assert [h["hop"] for h in saved["hops"]] == [h["hop"] for h in result["hops"]]
    md = (out / "report.md").read_text()
    assert md.startswith("# electra-bridge demo: all hops verified") and "| perturbed |" in md
    png = (out / "drift.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.oracle
def test_every_output_folder_loads_with_autotokenizer(full_demo):
    from transformers import AutoTokenizer, ElectraTokenizerFast

    _, result, out = full_demo
    folders = [Path(h["path"]) for h in result["hops"] if h["result"] == "ok" and h["path"]]
    assert len(folders) >= 2
    ref = ElectraTokenizerFast(vocab_file=str(out.parent / "demo-out" / "01-safetensors" / "vocab.txt"))
    text, pair = ["café über 中国人"], ["naïve résumé"]
    want = ref(text, pair)["input_ids"]
    for folder in folders:
        assert AutoTokenizer.from_pretrained(str(folder))(text, pair)["input_ids"] == want, folder


@pytest.mark.requires("tokenizers")
def test_generated_model_when_fixtures_are_absent(tmp_path, monkeypatch, capsys):
    """No fixtures (an installed wheel): a seeded random model with a generated vocabulary is the source."""
    monkeypatch.setattr(demo, "FIXTURES", tmp_path / "no-fixtures")
    monkeypatch.setattr(demo, "CHAIN", ("safetensors", "no-such-format"))
    monkeypatch.setattr(demo, "ARTIFACTS", ())
    monkeypatch.setattr(demo, "NATIVE_RUNTIME", {})
    code = cli.main(["demo", "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tiny random model" in out and "caught at layer 1" in out
    assert "no-such-format is not registered in this installation" in out
    source = tmp_path / "out" / "00-source"
    assert {"vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in source.iterdir()}
    vocab = (source / "vocab.txt").read_text().splitlines()
    assert len(vocab) == len(set(vocab)) == json.loads((source / "config.json").read_text())["vocab_size"]
    # a second run replaces its own folder; a foreign folder is never deleted
    assert cli.main(["demo", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    assert cli.main(["demo", "--out", str(foreign), "--quiet"]) == 2
    assert (foreign / "keep.txt").read_text() == "precious"


def test_hop_skips_are_reasoned():
    reason = demo._unavailable("no-such-format", "checkpoint")
    assert reason == "no-such-format is not registered in this installation"
    artifacts = [n for n in FORMATS if get_format(n).kind == "artifact"]
    if artifacts:
        assert "artifact format" in demo._unavailable(artifacts[0], "checkpoint")
