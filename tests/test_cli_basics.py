"""The CLI as a new user meets it, run as the user types it (the installed console script in a
subprocess): help, --version, `formats`, one JSON shape, one error line per mistake, refused
options that do not apply, a closed stdout, no framework noise and no staging paths on stderr."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, run_cli

from electra_bridge.converters.engine import extras
from electra_bridge.converters.formats import FORMATS

SRC = FIXTURES / "hf" / "pretraining"
TF1 = FIXTURES / "tf1" / "pretraining"
ENVELOPE = ("electra_bridge", "command", "ok", "exit_code", "error")


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bare_command_prints_help_and_exits_0():
    proc = run_cli()
    assert proc.returncode == 0 and proc.stderr == ""
    assert "convert" in proc.stdout and "formats" in proc.stdout and "exit codes" in proc.stdout


def test_version_is_the_installed_distribution():
    from importlib import metadata

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"electra-bridge {metadata.version('electra-bridge')}"


def test_formats_lists_every_registered_format_with_its_availability():
    text = run_cli("formats")
    assert text.returncode == 0, text.stderr
    proc = run_cli("formats", "--json")
    doc = json.loads(proc.stdout)
    assert tuple(doc)[:5] == ENVELOPE and doc["ok"] and doc["command"] == "formats"
    rows = {r["format"]: r for r in doc["formats"]}
    assert list(rows) == list(FORMATS)
    for name, row in rows.items():
        assert re.search(rf"^{re.escape(name)} ", text.stdout, re.M), name
        assert row["available"] == (not extras.missing_modules(row["extra"]) if row["extra"] in extras.EXTRA_MODULES
                                    else True)
        assert row["read"] == (row["kind"] == "checkpoint") and row["write"]
    assert rows["keras-hub"]["heads"] == ["base"] and "causal-lm" not in rows["h5"]["heads"]
    assert {r["runtime"] for r in doc["runtimes"]} >= {"numpy", "torch", "tf", "jax"}


def test_json_has_one_shape_on_success_and_failure(tmp_path):
    ok = json.loads(run_cli("inspect", SRC, "--json").stdout)
    bad = run_cli("inspect", tmp_path / "missing", "--json")
    failed = json.loads(bad.stdout)
    assert tuple(ok)[:5] == tuple(failed)[:5] == ENVELOPE
    assert ok["ok"] and ok["exit_code"] == 0 and ok["error"] is None and ok["head"] == "pretraining"
    assert not failed["ok"] and failed["exit_code"] == bad.returncode == 2 and "does not exist" in failed["error"]
    assert one_error_line(bad.stderr) == f"error: {failed['error']}"


@pytest.mark.parametrize("args, needle", [
    (("--atol", "-1"), "--atol: -1 must be a finite number >= 0"),
    (("--atol", "nan"), "--atol: nan must be a finite number >= 0"),
    (("--rtol", "inf"), "--rtol: inf must be a finite number >= 0"),
    (("--min-agreement", "1.5"), "between 0 and 1"),
    (("--net", "generator"), "--net does not apply to the source (safetensors): it is a read option of tf1 only"),
    (("--opset", "17", "--to-ignore"), "unrecognized arguments: --to-ignore"),
])
def test_mistakes_are_one_error_line_naming_the_option(tmp_path, args, needle):
    proc = run_cli("convert", SRC, tmp_path / "out", "--to", "safetensors", *args)
    assert proc.returncode == 2 and needle in one_error_line(proc.stderr), proc.stderr
    assert not (tmp_path / "out").exists()


def test_write_options_of_another_format_are_refused(tmp_path):
    proc = run_cli("convert", SRC, tmp_path / "out", "--to", "h5", "--opset", "17")
    assert proc.returncode == 2
    assert "--opset does not apply to --to h5 (h5): it is a write option of onnx only" in one_error_line(proc.stderr)


def test_verify_refuses_a_read_option_neither_side_takes():
    proc = run_cli("verify", SRC, SRC, "--net", "generator")
    assert proc.returncode == 2 and "--net applies to neither side" in one_error_line(proc.stderr)


def test_a_closed_stdout_ends_quietly():
    exe = Path(sys.executable).parent / "electra-bridge"
    proc = subprocess.run(f"'{exe}' inspect '{SRC}' | head -1", shell=True, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.stdout.startswith("format: safetensors") and proc.stderr == ""
    status = subprocess.run(f"set -o pipefail; '{exe}' inspect '{SRC}' | head -1 >/dev/null", shell=True,
                            executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert status.returncode == 0 and status.stderr == ""


@pytest.mark.requires("tf")
def test_no_framework_noise_and_no_staging_path_on_stderr(tmp_path):
    """A TF1 conversion verified through TensorFlow (--runtime tf): stderr holds only our own lines."""
    proc = run_cli("convert", TF1, tmp_path / "out", "--to", "tf1", "--runtime", "tf")
    assert proc.returncode == 0, proc.stderr
    for noise in ("absl::InitializeLog", "cuInit", "oneDNN", "cpu_feature_guard", "cuda", ".partial-"):
        assert noise not in proc.stderr, proc.stderr
    verbose = run_cli("convert", TF1, tmp_path / "out2", "--to", "tf1", "--runtime", "tf", "--verbose")
    assert verbose.returncode == 0 and "absl" in verbose.stderr   # --verbose shows what was hidden


def test_quiet_prints_only_the_result(tmp_path):
    proc = run_cli("convert", TF1, tmp_path / "out", "--to", "safetensors", "--quiet")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'out'}")


def test_inspect_reads_as_convert_would(tmp_path):
    gen = json.loads(run_cli("inspect", TF1, "--net", "generator", "--json").stdout)
    disc = json.loads(run_cli("inspect", TF1, "--json").stdout)
    assert gen["head"] == "masked-lm" and disc["head"] == "pretraining"
    assert gen["config"]["hidden_size"] < disc["config"]["hidden_size"] or gen["num_parameters"] != disc["num_parameters"]
    base = json.loads(run_cli("inspect", SRC, "--head", "base", "--json").stdout)
    assert base["head"] == "base" and base["num_parameters"] < json.loads(run_cli("inspect", SRC, "--json").stdout)[
        "num_parameters"]
    shutil.copytree(SRC, tmp_path / "no-config")
    (tmp_path / "no-config" / "config.json").unlink()
    inferred = run_cli("inspect", tmp_path / "no-config")
    assert inferred.returncode == 0 and "(inferred from the tensor shapes)" in inferred.stdout
    given = json.loads(run_cli("inspect", tmp_path / "no-config", "--config", SRC / "config.json", "--json").stdout)
    assert given["config"] == disc_config(SRC) and "config" not in given["provenance"]
    bin_folder = FIXTURES / "hf-bin" / "pretraining"
    if bin_folder.exists() and not extras.missing_modules("torch"):
        assert run_cli("inspect", bin_folder).stdout.startswith("format: safetensors (pytorch_model.bin)")


def disc_config(folder: Path) -> dict:
    return json.loads(run_cli("inspect", folder, "--json").stdout)["config"]
