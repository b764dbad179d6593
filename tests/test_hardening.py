"""Hostile artifacts open without executing anything in them (issue 11, code execution).

torch 2.13's ``torch.export.load`` runs code from a ``.pt2`` in three ways proven here with a
sentinel file: the sample inputs are unpickled with ``weights_only=False`` after the safe load
fails, symbolic size expressions go through ``sympy.sympify`` (``eval``), and ``guards_code`` is
compiled into the module's Python. electra-bridge's loader (runtimes/torch_artifacts.check_pt2)
refuses every such archive before torch sees it.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from helpers import requires, spec

from electra_bridge.converters import cli, write, read
from electra_bridge.runtimes.torch_artifacts import load_torch_export, load_torchscript
from electra_bridge.schemas import FormatError

pytestmark = requires("torch")


class Payload:
    """Pickles to ``os.system("touch <sentinel>")``."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch '{self.sentinel}'",))


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2") / "out"
    write(read(spec.HF_SAFETENSORS / "masked-lm"), out, "torch-export")
    return out / "model.pt2"


def rewrite(src, dst, member, data):
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            b.writestr(info, data if info.filename.endswith(member) else a.read(info.filename))
    return dst


def program(pt2):
    with zipfile.ZipFile(pt2) as a:
        return json.loads(a.read(next(n for n in a.namelist() if n.endswith("models/model.json"))))


def pickled_sample_inputs(pt2, dst, sentinel):
    import torch

    buf = io.BytesIO()
    torch.save(Payload(sentinel), buf)
    return rewrite(pt2, dst, "data/sample_inputs/model.pt", buf.getvalue())


def evil_guard(pt2, dst, sentinel):
    doc = program(pt2)
    doc["guards_code"].append(f"__import__('os').system('touch {sentinel}') == 0")
    return rewrite(pt2, dst, "models/model.json", json.dumps(doc).encode())


def evil_sympy(pt2, dst, sentinel):
    text = json.dumps(program(pt2))
    symbol = text.split('"expr_str": "', 1)[1].split('"', 1)[0]
    text = text.replace(symbol, f"__import__('os').system('touch {sentinel}')", 1)
    return rewrite(pt2, dst, "models/model.json", text.encode())


def evil_target(pt2, dst, sentinel):
    doc = program(pt2)
    doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.hub.load"
    return rewrite(pt2, dst, "models/model.json", json.dumps(doc).encode())


def evil_member(pt2, dst, sentinel):
    with zipfile.ZipFile(pt2) as a:
        root = a.namelist()[0].split("/", 1)[0]
    rewrite(pt2, dst, "\0none", b"")
    with zipfile.ZipFile(dst, "a") as b:
        b.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    return dst


def pickled_weight(pt2, dst, sentinel):
    import torch

    with zipfile.ZipFile(pt2) as a:
        name = next(n for n in a.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(a.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    buf = io.BytesIO()
    torch.save(Payload(sentinel), buf)
    rewrite(pt2, dst, "model_weights_config.json", json.dumps(config).encode())
    tmp = dst.with_suffix(".tmp")
    rewrite(dst, tmp, "/" + first["path_name"], buf.getvalue())
    tmp.replace(dst)
    return dst


#: each: (builder, does plain torch.export.load(+run) execute it?)
ATTACKS = {"pickled-sample-inputs": (pickled_sample_inputs, True), "guards-code": (evil_guard, True),
           "sympify-expression": (evil_sympy, True), "node-target": (evil_target, False),
           "aotinductor-member": (evil_member, False), "pickled-weight": (pickled_weight, True)}


@pytest.mark.parametrize("attack", [a for a, (_, proven) in ATTACKS.items() if proven])
def test_plain_torch_export_load_executes_the_payload(pt2, tmp_path, attack):
    """The threat is real: torch's own loader creates the sentinel."""
    import torch

    sentinel = tmp_path / "SENTINEL"
    path = ATTACKS[attack][0](pt2, tmp_path / "model.pt2", sentinel)
    try:
        module = torch.export.load(str(path)).module()
        x = torch.zeros(2, 5, dtype=torch.long)
        module(x, x, x)
    except Exception:
        pass
    assert sentinel.exists()


@pytest.mark.parametrize("attack", ATTACKS)
def test_our_loader_refuses_before_anything_runs(pt2, tmp_path, attack, capsys):
    sentinel = tmp_path / "SENTINEL"
    folder = tmp_path / "art"
    folder.mkdir()
    for f in pt2.parent.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    ATTACKS[attack][0](pt2, folder / "model.pt2", sentinel)
    with pytest.raises(FormatError, match="refusing|not part of"):
        load_torch_export(folder / "model.pt2")
    for argv in (["inspect", str(folder)], ["verify", str(folder), str(spec.HF_SAFETENSORS / "masked-lm"), "-q"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "model.pt2" in err[0], err
        assert "rerun with --debug" not in err[0]
    assert not sentinel.exists()


def test_our_own_pt2_still_loads(pt2):
    module, meta = load_torch_export(pt2)
    assert meta["head"] == "masked-lm"


def test_a_fifo_artifact_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "model.pt")
    with pytest.raises(FormatError, match="not a regular file"):
        load_torchscript(tmp_path / "model.pt")


@pytest.fixture(scope="module")
def torchscript(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts") / "out"
    write(read(spec.HF_SAFETENSORS / "masked-lm"), out, "torchscript")
    return out / "model.pt"


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_unpickler_never_resolves_python_globals(torchscript, tmp_path, member):
    """The audit of torch.jit.load: its pickles go through TorchScript's unpickler, which builds
    tensors and TorchScript classes only; a GLOBAL of os.system is an error, not a call."""
    import torch

    sentinel = tmp_path / "SENTINEL"
    cmd = f"touch {sentinel}".encode()
    payload = b"\x80\x02cposix\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    path = rewrite(torchscript, tmp_path / "model.pt", "/" + member, payload)
    with pytest.raises(Exception):
        torch.jit.load(str(path))
    with pytest.raises(FormatError):
        load_torchscript(path)
    assert not sentinel.exists()
