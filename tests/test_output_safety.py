"""convert never replaces, deletes or changes its source, the working folder or a folder it did not write."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, spec


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path):
    """tmp/src (a copy of the base fixture) and its digests; the CLI runs with tmp as working folder."""
    src = tmp_path / "work" / "src"
    shutil.copytree(spec.HF_SAFETENSORS / "base", src)
    return src, digests(src.parent)


@pytest.mark.parametrize("out", ["src", ".", "src/config.json", "src/model.safetensors", "..", "src/.."])
def test_force_never_replaces_the_source_or_the_working_folder(work, out):
    src, before = work
    proc = run_cli("convert", "src", out, "--to", "safetensors", "--force", cwd=src.parent)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert digests(src.parent) == before           # nothing added, removed or changed


def test_output_inside_the_source_folder_is_allowed_and_leaves_the_source_alone(work):
    src, before = work
    proc = run_cli("convert", "src", "src/onnx-free-copy", "--to", "safetensors", cwd=src.parent)
    assert proc.returncode == 0, proc.stderr
    after = digests(src.parent)
    assert {k: v for k, v in after.items() if not k.startswith("src/onnx-free-copy/")} == before
    assert "src/onnx-free-copy/model.safetensors" in after


def test_force_replaces_only_electra_bridges_own_folder(work):
    src, _ = work
    mine = src.parent / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = run_cli("convert", "src", "mine", "--to", "safetensors", "--force", cwd=src.parent)
    assert proc.returncode == 2 and "not an output of electra-bridge" in proc.stderr
    assert (mine / "notes.txt").read_text() == "keep me"

    first = run_cli("convert", "src", "out", "--to", "safetensors", cwd=src.parent)
    assert first.returncode == 0, first.stderr
    again = run_cli("convert", "src", "out", "--to", "h5", "--force", cwd=src.parent)
    assert again.returncode == 0, again.stderr
    assert (src.parent / "out" / "tf_model.h5").is_file() and not (src.parent / "out" / "model.safetensors").exists()
    assert not [p for p in src.parent.iterdir() if p.name.startswith(".")]   # no staging or replaced folder left
