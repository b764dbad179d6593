"""The README's commands, run as a user types them: every ``electra-bridge`` line of its ``sh``
blocks and its Python API example, in a folder holding the names they use (``electra_base/`` is a
Google TF1 pretraining checkpoint, ``hf-model/`` and ``old/`` HF folders, ``new/`` an ONNX export
of ``old/`` with hidden states, ...). Placeholder lines (``SRC OUT --to FORMAT``) run with the
placeholders bound to fixtures and their optional ``[...]`` parts left out."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, ROOT

pytestmark = pytest.mark.requires("test")

CLI = Path(sys.executable).parent / "electra-bridge"
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: placeholder -> what it stands for in the folder the commands run in
PLACEHOLDERS = {"PATH": "hf-model/", "SRC": "hf-model/", "OUT": "placeholder-out/", "FORMAT": "safetensors",
                "HEAD": "base", "A": "old/", "B": "new/", "NET": "generator", "FILE": "hf-model/config.json",
                "PLAN": "plan.yaml"}


def blocks(language: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"```{language}\n(.*?)```", README, re.S)]


def command_lines() -> list[str]:
    """Every ``electra-bridge`` line of the README's sh blocks, comments removed."""
    lines = []
    for block in blocks("sh"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("electra-bridge"):
                lines.append(line)
    return lines


def as_typed(line: str) -> list[str]:
    """``line`` with optional ``[...]`` parts dropped and placeholders bound."""
    line = re.sub(r"\s*\[[^\]]*\]", "", line)
    return [PLACEHOLDERS.get(word, word) for word in shlex.split(line)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(FIXTURES / "tf1" / "pretraining", work / "electra_base")
    shutil.copytree(FIXTURES / "hf" / "pretraining", work / "hf-model")
    shutil.copytree(FIXTURES / "hf" / "pretraining", work / "old")
    shutil.copytree(FIXTURES / "hf-flax" / "masked-lm", work / "flax-model")
    run(work, "convert", "old/", "new/", "--to", "onnx", "--hidden-states")
    run(work, "convert", "electra_base/", "model-onnx/", "--to", "onnx", "--net", "generator")
    run(work, "convert", "hf-model/", "provenance-out/", "--to", "h5")
    # the README's batch plan, over the folders it names
    shutil.copytree(FIXTURES / "tf1" / "pretraining", work / "ckpts" / "electra_base")
    shutil.copytree(FIXTURES / "hf" / "sequence-classification", work / "hf" / "finetuned")
    plan = next(b for b in blocks("yaml") if b.startswith("# plan.yaml"))
    (work / "plan.yaml").write_text(plan)
    ids = np.array([[2, 10, 11, 12, 3, 0], [2, 13, 14, 3, 15, 3]], dtype=np.int64)
    np.savez(work / "batch.npz", input_ids=ids, attention_mask=(ids != 0).astype(np.int64),
             token_type_ids=np.array([[0] * 6, [0, 0, 0, 0, 1, 1]], dtype=np.int64))
    return work


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(CLI), *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_readme_shows_commands():
    lines = command_lines()
    assert len(lines) >= 10 and any("--net both" in line for line in lines)


@pytest.mark.parametrize("line", command_lines())
def test_readme_command_runs_as_typed(workdir, line):
    args = as_typed(line)[1:]
    out_folder = next((a for a in args[2:3] if args[:1] == ["convert"]), None)
    if out_folder:   # each convert line writes its own folder: rerunning the test must not meet an old one
        shutil.rmtree(workdir / out_folder, ignore_errors=True)
    if args == ["demo"]:
        args = ["demo", "--out", "demo-out"]
    if args[:1] == ["verify"] and "--provenance" in args:   # OUT: an output folder of ours
        args[1] = "provenance-out/"
    proc = run(workdir, *args)
    if args[:1] == ["verify"]:
        assert ("as recorded" if "--provenance" in args else "EQUAL") in proc.stdout
    if "--report" in args:
        assert (workdir / args[args.index("--report") + 1]).read_text().strip()
    if "--plot" in args:
        assert (workdir / args[args.index("--plot") + 1]).read_bytes()[:4] == b"\x89PNG"


def test_readme_python_api_example_runs(workdir, capsys):
    example = next(b for b in blocks("python") if "from electra_bridge.converters import" in b)
    for name in ("out", "tf-model"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        exec(compile(example, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "max_abs" in capsys.readouterr().out
    assert (workdir / "tf-model" / "tf_model.h5").is_file() and (workdir / "out" / "model.safetensors").is_file()
