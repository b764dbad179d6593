"""End-to-end CLI tests of `electra-bridge verify` in a subprocess: exit codes, localisation, reports, inputs.

The perturbation fixtures are real files: a copy of fixtures/hf/pretraining whose
model.safetensors is rewritten by the safetensors library with one weight nudged.
The acceptance cases (exit 0 / 1 / 2) run the installed command in a subprocess; the
many argument-validation cases call ``cli.main`` in-process (same parser, same exit
codes) to keep the suite quick.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, run_cli

from electra_bridge.converters import cli
from electra_bridge.converters import verify as api_verify

SRC = FIXTURES / "hf" / "pretraining"
MC = FIXTURES / "hf" / "multiple-choice"


def perturbed_copy(tmp: Path, name: str, delta: float = 1e-2, src: Path = SRC) -> Path:
    """A copy of ``src`` whose native tensor ``name`` has one element moved by ``delta``."""
    from safetensors.numpy import load_file, save_file

    out = tmp / f"perturbed-{name}"
    shutil.copytree(src, out)
    tensors = load_file(out / "model.safetensors")
    assert name in tensors, sorted(tensors)
    weight = tensors[name].copy()
    weight.flat[7] += delta
    tensors[name] = weight
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def single_error_line(proc) -> str:
    """stderr must be exactly one line, 'error: ...', and never a traceback."""
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def main(capsys, *args) -> tuple[int, str, str]:
    """``electra-bridge ARGS`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---- exit 0: identical pairs ------------------------------------------------------------------------

def test_identical_pair_exits_0(tmp_path):
    proc = run_cli("verify", SRC, SRC, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["first_divergence"] is None
    assert set(report["heads"]) == {"base", "pretraining"}
    for head in report["heads"].values():
        assert list(head["hidden_state_drift"]) == ["embeddings", "layer 0", "layer 1"]
        assert all(d["max_abs"] == 0.0 for d in head["outputs"].values())
    assert "\r" not in proc.stderr   # no progress bar when stderr is not a terminal


def test_identical_pair_across_formats_exits_0(capsys):
    """transformers wrote the same weights as tf_model.h5 and model.safetensors."""
    code, out, err = main(capsys, "verify", FIXTURES / "hf-h5" / "pretraining", SRC)
    assert code == 0, out + err
    assert "EQUAL" in out and "NOT EQUAL" not in out


# ---- exit 1: localisation ---------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.requires("test")
def test_perturbed_layer_is_named_first(tmp_path, layer):
    b = perturbed_copy(tmp_path, f"electra.encoder.layer.{layer}.attention.self.query.weight")
    report_path = tmp_path / "r.json"
    proc = run_cli("verify", SRC, b, "--report", report_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"first divergence: layer {layer}" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert report["first_divergence"] == f"layer {layer}"
    for head in ("base", "pretraining"):
        drift = report["heads"][head]["hidden_state_drift"]
        assert report["heads"][head]["first_divergence"] == f"layer {layer}"
        # every stage before layer k is exact; layer k is out of tolerance
        stages = list(drift)
        k = stages.index(f"layer {layer}")
        assert all(drift[s]["max_abs"] == 0.0 and drift[s]["ok"] for s in stages[:k])
        assert not drift[stages[k]]["ok"] and drift[stages[k]]["max_abs"] > report["atol"]


@pytest.mark.requires("test")
def test_perturbed_embeddings_and_head_only(tmp_path, capsys):
    emb = perturbed_copy(tmp_path, "electra.embeddings.word_embeddings.weight", delta=0.5)
    # the perturbed element is row 0 (the pad id): padded positions carry it, so it shows in every stage
    code, out, _ = main(capsys, "verify", emb, SRC, "--json")
    assert code == 1 and json.loads(out)["first_divergence"] == "embeddings"

    head = perturbed_copy(tmp_path, "discriminator_predictions.dense.weight")
    code, out, _ = main(capsys, "verify", head, SRC, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["heads"]["base"]["ok"] is True            # the backbone is untouched
    assert report["heads"]["pretraining"]["first_divergence"] == "logits"
    assert all(d["ok"] for d in report["heads"]["pretraining"]["hidden_state_drift"].values())


@pytest.mark.requires("test")
def test_markdown_report_and_plot(tmp_path):
    b = perturbed_copy(tmp_path, "electra.encoder.layer.1.output.dense.weight")
    md, png = tmp_path / "r.md", tmp_path / "drift.png"
    proc = run_cli("verify", SRC, b, "--report", md, "--plot", png)
    assert proc.returncode == 1, proc.stderr
    text = md.read_text()
    assert text.startswith("# verify: NOT EQUAL")
    assert "first divergence: **layer 1**" in text
    assert "| layer 1 | **" in text and "| layer 0 | 0.00e+00 | 0.00e+00 |" in text
    width, height = png_size(png)
    assert width >= 600 and height >= 300 and png.stat().st_size > 10_000


@pytest.mark.requires("test")
def test_tolerance_override_and_heads(tmp_path, capsys):
    b = perturbed_copy(tmp_path, "electra.encoder.layer.1.attention.self.query.weight")
    assert main(capsys, "verify", SRC, b, "--atol", "1", "--rtol", "0")[0] == 0
    code, out, _ = main(capsys, "verify", SRC, b, "--heads", "base", "--json")
    assert code == 1
    assert list(json.loads(out)["heads"]) == ["base"]


# ---- exit 2: unusable input, one line, no traceback ------------------------------------------------

def test_garbage_weights_exit_2(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(SRC / "config.json", bad / "config.json")
    (bad / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(512))
    proc = run_cli("verify", bad, SRC)
    assert proc.returncode == 2
    assert "model.safetensors" in single_error_line(proc)
    assert proc.stdout == ""


def test_missing_path_exit_2(tmp_path):
    proc = run_cli("verify", tmp_path / "does-not-exist", SRC)
    assert proc.returncode == 2
    assert "does not exist" in single_error_line(proc)


def test_truncated_weights_exit_2(tmp_path, capsys):
    bad = tmp_path / "short"
    shutil.copytree(SRC, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = main(capsys, "verify", SRC, bad)
    assert code == 2
    one_error_line(err)


@pytest.mark.parametrize("args", [
    ("verify", str(SRC), str(SRC), "--report", "r.txt"),
    ("verify", str(SRC), str(SRC), "--plot", "p.jpg"),
    ("verify", str(SRC), str(SRC), "--text-pair", "only a pair"),
    ("verify", str(SRC), str(SRC), "--text", "a", "--text", "b", "--text-pair", "one"),
    ("verify", str(SRC), str(SRC), "--heads", "masked-lm"),
])
def test_unusable_arguments_exit_2(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, *args)
    assert code == 2, err
    one_error_line(err)


def test_different_models_share_only_base(capsys):
    """Two heads' fixtures (different random weights): base is the common head, and it differs."""
    code, out, _ = main(capsys, "verify", SRC, MC, "--json")
    assert code == 1
    report = json.loads(out)
    assert list(report["heads"]) == ["base"] and report["first_divergence"] == "embeddings"


# ---- --inputs ---------------------------------------------------------------------------------------

def test_inputs_file(tmp_path, capsys):
    ids = np.array([[2, 10, 11, 3, 40, 3], [2, 12, 3, 0, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    types = np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=mask, token_type_ids=types)
    code, out, err = main(capsys, "verify", SRC, SRC, "--inputs", tmp_path / "in.npz", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["inputs"]["pretraining:input_ids"] == [2, 6]
    assert report["source"] == "file in.npz"

    # [B, S] for a multiple-choice model: one example whose choices are the rows
    code, out, err = main(capsys, "verify", MC, MC, "--inputs", tmp_path / "in.npz", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["inputs"]["multiple-choice:input_ids"] == [1, 2, 6]
    assert report["inputs"]["base:input_ids"] == [2, 6]
    assert report["heads"]["multiple-choice"]["outputs"]["logits"]["shape"] == [1, 2]


def test_inputs_file_choices_axis(tmp_path, capsys):
    ids = np.tile(np.array([2, 10, 11, 3, 0]), (2, 3, 1))
    np.savez(tmp_path / "mc.npz", input_ids=ids, attention_mask=(ids != 0).astype(np.int32))
    code, out, err = main(capsys, "verify", MC, MC, "--inputs", tmp_path / "mc.npz", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["heads"]["multiple-choice"]["outputs"]["logits"]["shape"] == [2, 3]
    assert report["inputs"]["base:input_ids"] == [6, 5]


@pytest.mark.parametrize("arrays, message", [
    ({"input_ids": np.zeros((2, 4), np.float32)}, "must hold integers"),
    ({"input_ids": np.zeros((2, 4), np.int64), "attention_mask": np.ones((2, 5), np.int64)}, "must match"),
    ({"input_ids": np.full((1, 4), 10_000)}, "must lie in [0, 108)"),
    ({"input_ids": np.zeros((1, 41), np.int64)}, "max_position_embeddings"),
    ({"input_ids": np.zeros(4, np.int64)}, "[batch, seq]"),
    ({"token_type_ids": np.zeros((1, 4), np.int64)}, "input_ids is missing"),
    ({"input_ids": np.zeros((1, 4), np.int64), "labels": np.zeros(1)}, "unexpected arrays labels"),
    ({"input_ids": np.zeros((1, 4), np.int64), "attention_mask": np.full((1, 4), 2)}, "only 0 and 1"),
])
def test_bad_inputs_exit_2(tmp_path, capsys, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    code, _, err = main(capsys, "verify", SRC, SRC, "--inputs", tmp_path / "bad.npz")
    assert code == 2, err
    assert message in one_error_line(err)


def test_inputs_not_npz_exit_2(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("not a zip")
    code, _, err = main(capsys, "verify", SRC, SRC, "--inputs", tmp_path / "x.npz")
    assert code == 2
    one_error_line(err)


# ---- help, JSON, API --------------------------------------------------------------------------------

def test_help_documents_exit_codes_and_tolerances(capsys):
    """--help is what a CI author reads: exit codes, inputs, tolerance table."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for needle in ("exit codes: 0 equal", "1 outputs differ", "2 unusable input", "--text-pair", "--inputs",
                   "--report", "--plot", "onnxruntime", "atol"):
        assert needle in out, needle
    assert "demo" in cli.build_parser().format_help()


def test_json_everywhere(tmp_path, capsys):
    code, out, _ = main(capsys, "inspect", SRC, "--json")
    info = json.loads(out)
    assert code == 0 and info["head"] == "pretraining" and "vocab.txt" in info["assets"]
    code, out, _ = main(capsys, "convert", SRC, tmp_path / "out", "--to", "safetensors", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["outputs"][0]["report"]["ok"] is True and doc["out"] == str(tmp_path / "out")


@pytest.mark.requires("test")
def test_python_api_mirrors_cli(tmp_path, capsys):
    b = perturbed_copy(tmp_path, "electra.encoder.layer.0.intermediate.dense.weight")
    report = api_verify(SRC, b, report=tmp_path / "api.json", plot=tmp_path / "api.png")
    code, out, _ = main(capsys, "verify", SRC, b, "--json")
    from_cli = json.loads(out)
    assert code == 1 and not report.ok and report.first_divergence == "layer 0" == from_cli["first_divergence"]
    saved = json.loads((tmp_path / "api.json").read_text())
    assert saved["heads"] == from_cli["heads"]   # same numbers whichever way it is called
    png_size(tmp_path / "api.png")


# ---- progress -----------------------------------------------------------------------------------------

class FakeTTY:
    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None: ...


def test_progress_only_on_a_terminal_and_not_quiet():
    from electra_bridge.converters.engine import progress
    from electra_bridge.converters.api import read

    ckpt = read(SRC)
    for tty, enabled, drawn in ((True, None, True), (False, None, False), (True, False, False)):
        progress.configure(enabled)
        stream = FakeTTY(tty)
        with progress.Progress(len(ckpt.tensors), "writing", stream=stream) as bar:
            tracked = progress.track_tensors(ckpt, bar)
            arrays = tracked.arrays()
            assert bar.count == len(ckpt.tensors)          # one tick per tensor loaded
        assert ("writing" in stream.text) is drawn, (tty, enabled)
        assert all(np.array_equal(arrays[n], ckpt.array(n)) for n in ckpt.tensors)
    progress.configure(None)


def test_a_drawn_bar_keeps_its_elapsed_time_moving_between_ticks(monkeypatch):
    """A step with no ticks (torch.export tracing) still redraws the bar; a closed bar stops drawing."""
    import threading
    import time

    from electra_bridge.converters.engine import progress

    def beating() -> int:
        return sum(t.name == "progress" and t.is_alive() for t in threading.enumerate())

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.01)
    progress.configure(None)
    stream = FakeTTY(True)
    with progress.Progress(10, "exporting", stream=stream):
        drawn = stream.text.count("\r")
        time.sleep(0.3)
        assert stream.text.count("\r") >= drawn + 5   # redrawn without a single update
        assert beating() == 1
    assert beating() == 0
    settled = stream.text
    time.sleep(0.05)
    assert stream.text == settled
    with progress.Progress(10, "exporting", stream=FakeTTY(False)):
        assert beating() == 0   # no terminal: no bar, no thread
