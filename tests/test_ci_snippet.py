"""The README's "Equivalence checks in CI" snippet, run as a user types it.

An ONNX export with hidden states (``convert --to onnx --hidden-states``, as a bare
``new.onnx``) of a fixture (``old/``), one layer's weights perturbed with the onnx library,
then the README's own ``verify old/ new.onnx --report report.md --plot drift.png`` line,
through the installed console script: it exits 1, names the layer in its output and
report, and the PNG draws it (the data the PNG carries, and its red pixels in that layer's
column). The unperturbed export exits 0 with nothing drawn red.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, spec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from electra_bridge.converters.plot import PNG_DATA_KEY

CLI = Path(sys.executable).parent / "electra-bridge"       # the installed console script
HEAD = "token-classification"
#: the layer perturbed (the fixture has two): the first divergence must be this one, not layer 0
LAYER = 1


def readme_ci_command() -> list[str]:
    """The ``run: electra-bridge verify ... --plot ...`` line of the README's CI workflow snippet."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Equivalence checks in CI"):]
    workflow = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    line = next(m.group(1) for m in re.finditer(r"run: (electra-bridge verify .*)", workflow) if "--plot" in m.group(1))
    return shlex.split(line)


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A folder with ``old/`` (the fixture checkpoint) and ``clean.onnx`` (its ONNX export with hidden states)."""
    work = tmp_path_factory.mktemp("ci")
    shutil.copytree(spec.HF_SAFETENSORS / HEAD, work / "old")
    proc = cli("convert", "old/", "export/", "--to", "onnx", "--hidden-states", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copy(work / "export" / "model.onnx", work / "clean.onnx")
    return work


def run_snippet(work: Path, model: Path) -> subprocess.CompletedProcess:
    """The README command, with ``model`` in place as ``new.onnx``; report.md and drift.png fresh."""
    shutil.copy(model, work / "new.onnx")
    for stale in ("report.md", "drift.png"):
        (work / stale).unlink(missing_ok=True)
    command = readme_ci_command()
    assert command[:2] == ["electra-bridge", "verify"] and "new.onnx" in command, command
    return cli(*command[1:], cwd=work)


def perturb(src: Path, dst: Path, layer: int) -> Path:
    """A real edit of the .onnx: one unit of layer ``layer``'s feed-forward output weight moved by 0.05."""
    model = onnx.load(str(src))
    name = f"encoder.layer.{layer}.output.dense.weight.T"
    target = next(t for t in model.graph.initializer if t.name == name)
    array = onnx.numpy_helper.to_array(target).copy()
    array[:, 3] += 0.05
    target.CopyFrom(onnx.numpy_helper.from_array(array, name))
    onnx.save(model, str(dst))
    return dst


def png_data(path: Path) -> tuple[dict, np.ndarray]:
    """(the plotted data the PNG carries, its pixels as float RGB in [0, 1])."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
        data = json.loads(image.text[PNG_DATA_KEY])
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    return data, pixels


def red_pixels(pixels: np.ndarray, x: float, half_width: int = 2) -> int:
    """Strongly red pixels in the columns around display x ``x`` (out-of-tolerance marks are red)."""
    columns = pixels[:, max(0, round(x) - half_width):round(x) + half_width + 1]
    r, g, b = columns[..., 0], columns[..., 1], columns[..., 2]
    return int(np.sum((r > 0.75) & (g < 0.55) & (b < 0.55)))


def test_snippet_names_and_draws_the_perturbed_layer(export):
    proc = run_snippet(export, perturb(export / "clean.onnx", export / "bad.onnx", LAYER))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"first divergence: layer {LAYER}" in proc.stdout
    report = (export / "report.md").read_text()
    assert report.startswith("# verify: NOT EQUAL") and f"first divergence: **layer {LAYER}**" in report
    assert "## Drift per layer" in report
    drift_rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in report.splitlines()
                  if line.startswith("| embeddings") or line.startswith("| layer")}
    assert not drift_rows["embeddings"].startswith("**") and not drift_rows["layer 0"].startswith("**")
    assert drift_rows[f"layer {LAYER}"].startswith("**")                       # bold = out of tolerance

    data, pixels = png_data(export / "drift.png")
    assert data["stages"] == ["embeddings", "layer 0", "layer 1", "head"]
    assert data["first_divergence"] == f"layer {LAYER}"
    (line,) = data["series"]
    assert line["label"] == HEAD and line["out_of_tolerance"][0] == f"layer {LAYER}"
    drift = dict(zip(data["stages"], line["max_abs"]))
    assert drift[f"layer {LAYER}"] > 1e-3 > 1e-5 > drift["layer 0"]              # the jump is drawn at that layer
    x = dict(zip(data["stages"], data["x_pixels"]))
    # the picture itself: red marks (the out-of-tolerance point, the first-divergence line) in that
    # layer's column, none in the columns of the stages before it
    assert red_pixels(pixels, x[f"layer {LAYER}"]) >= 50
    assert red_pixels(pixels, x["embeddings"]) == 0 and red_pixels(pixels, x["layer 0"]) == 0


def test_snippet_on_the_unperturbed_export_exits_0(export):
    proc = run_snippet(export, export / "clean.onnx")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first divergence" not in proc.stdout and "EQUAL" in proc.stdout
    report = (export / "report.md").read_text()
    assert report.startswith("# verify: EQUAL") and "## Drift per layer" in report and "| **" not in report
    data, pixels = png_data(export / "drift.png")
    (line,) = data["series"]
    assert data["first_divergence"] is None and line["out_of_tolerance"] == []
    assert len(line["max_abs"]) == 4 and max(line["max_abs"]) < 1e-5
    assert all(red_pixels(pixels, x) == 0 for x in data["x_pixels"])


def test_snippet_on_an_export_without_hidden_states_says_how_to_get_them(export):
    """Without --hidden-states the outputs are compared and the report and the PNG name the option."""
    proc = cli("convert", "old/", "outputs-only/", "--to", "onnx", cwd=export)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_snippet(export, export / "outputs-only" / "model.onnx")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "drift: not available" in proc.stdout and "--hidden-states" in proc.stdout
    assert "--hidden-states" in (export / "report.md").read_text()
    data, _ = png_data(export / "drift.png")
    assert data["series"] == [] and data["stages"] == []
