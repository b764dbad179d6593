"""converters/formats/torch_zip.py reads ``pytorch_model.bin`` without torch.

Two kinds of proof: differential tests against ``torch.load(weights_only=True)`` on archives written
by the real ``torch.save`` (every dtype, shared storages, views with offsets and strides, Parameters,
a module's OrderedDict state dict, transformers' sharded ``.bin``), skipped without torch; and
torch-free tests on the shipped fixtures and on archives edited with ``zipfile`` (a pickled payload
that must never run, truncation, compression, a short storage record, byte order, garbage), which
the light core runs too.
"""

from __future__ import annotations

import io
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_tensors, requires, run_python, spec

from electra_bridge.converters import read
from electra_bridge.converters.formats import torch_zip
from electra_bridge.schemas import FormatError, MissingDependencyError

BIN = spec.HF_BIN / "base" / "pytorch_model.bin"


def torch_state(path: Path) -> dict[str, np.ndarray]:
    """What torch.load itself reads, as numpy (bfloat16 through ml_dtypes)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: torch_zip._to_numpy(t) for name, t in state.items()}


def ours(path: Path) -> dict[str, np.ndarray]:
    return {name: t.load() for name, t in torch_zip.read(path).items()}


def assert_equal_states(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, (name, x.dtype, y.dtype, x.shape, y.shape)
        assert x.tobytes() == y.tobytes(), name


# ---- differential, against torch.load on files torch.save wrote --------------------------------

@requires("torch")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16",
                                   "int8", "uint8", "bool"])
def test_every_dtype_reads_as_torch_load_reads_it(dtype, tmp_path):
    import torch

    g = torch.Generator().manual_seed(0)
    values = torch.randn(7, 5, generator=g) * 100
    state = {"matrix": values.to(getattr(torch, dtype)), "scalar": values[0, 0].to(getattr(torch, dtype)),
             "empty": torch.zeros(0, 3, dtype=getattr(torch, dtype))}
    torch.save(state, tmp_path / "w.bin")
    got = ours(tmp_path / "w.bin")
    assert_equal_states(got, torch_state(tmp_path / "w.bin"))
    assert got["scalar"].shape == () and got["empty"].shape == (0, 3)


@requires("torch")
def test_views_sharing_one_storage_read_only_their_own_elements(tmp_path):
    import torch

    base = torch.arange(6 * 8, dtype=torch.float32).reshape(6, 8)
    state = {"base": base, "transposed": base.t(), "rows": base[2:5], "every_other": base[:, ::2],
             "column": base[:, 3], "offset_flat": base.reshape(-1)[11:29], "row": base[4]}
    torch.save(state, tmp_path / "views.bin")
    with zipfile.ZipFile(tmp_path / "views.bin") as zf:   # the premise: one storage record for them all
        assert sum("/data/" in n for n in zf.namelist()) == 1
    got = ours(tmp_path / "views.bin")
    assert_equal_states(got, torch_state(tmp_path / "views.bin"))
    for name in set(got) - {"base"}:   # each an array of its own, never a window on a shared buffer
        assert not np.shares_memory(got["base"], got[name]), name


@requires("torch")
def test_parameters_and_a_module_state_dict_read_as_their_tensors(tmp_path):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    torch.save(module.state_dict(), tmp_path / "state.bin")   # an OrderedDict carrying _metadata
    torch.save(dict(module.named_parameters()), tmp_path / "params.bin")   # nn.Parameter objects
    for name in ("state.bin", "params.bin"):
        assert_equal_states(ours(tmp_path / name), torch_state(tmp_path / name))


@requires("torch")
def test_the_fixtures_read_as_torch_load_reads_them():
    for folder in sorted(spec.HF_BIN.iterdir()):
        if (folder / "pytorch_model.bin").exists():
            assert_equal_states(ours(folder / "pytorch_model.bin"), torch_state(folder / "pytorch_model.bin"))


@requires("torch")
def test_transformers_sharded_bin_reads_as_its_unsharded_safetensors(tmp_path):
    transformers = pytest.importorskip("transformers")

    model = transformers.ElectraForPreTraining.from_pretrained(spec.HF_SAFETENSORS / "pretraining")
    model.save_pretrained(tmp_path / "bin", safe_serialization=False, max_shard_size="20KB")
    assert len(list((tmp_path / "bin").glob("pytorch_model-*.bin"))) > 1
    assert (tmp_path / "bin" / "pytorch_model.bin.index.json").exists()
    assert_same_tensors(read(spec.HF_SAFETENSORS / "pretraining"), read(tmp_path / "bin"))


@requires("torch")
def test_legacy_non_zip_format_goes_to_torch_load(tmp_path):
    import torch

    state = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(4, dtype=torch.bfloat16)}
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    assert torch_zip.is_legacy(tmp_path / "legacy.bin") and not zipfile.is_zipfile(tmp_path / "legacy.bin")
    assert_equal_states(ours(tmp_path / "legacy.bin"), torch_state(tmp_path / "legacy.bin"))


# ---- torch-free: the shipped fixtures and archives edited with zipfile --------------------------

def test_the_fixtures_read_without_importing_torch():
    """In an interpreter where importing torch fails, each fixture reads bit-equal to the same
    model's model.safetensors (the fixtures hold the same weights; .bin keeps the tied decoder).
    The core install has no safetensors package, so the project's own reader (checked against the
    library in the safetensors tests) gives the expected arrays."""
    proc = run_python(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from electra_bridge.converters.formats import torch_zip
        from electra_bridge.converters.formats.safetensors_file import SafetensorsFile
        for folder in sorted(Path({str(spec.HF_BIN)!r}).iterdir()):
            if not (folder / "pytorch_model.bin").exists():
                continue
            got = {{n: t.load() for n, t in torch_zip.read(folder / "pytorch_model.bin").items()}}
            stored = SafetensorsFile(Path({str(spec.HF_SAFETENSORS)!r}) / folder.name / "model.safetensors")
            want = {{n: t.load() for n, t in stored.tensors().items()}}
            extra = set(got) - set(want)
            assert extra <= {{"generator_lm_head.weight"}} and set(want) <= set(got), (folder.name, extra)
            for name, array in want.items():
                assert got[name].dtype == array.dtype and np.array_equal(got[name], array), (folder.name, name)
            print(folder.name, len(got))
        assert "torch" not in sys.modules
    """, blocked=("torch",))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(list(spec.HF_BIN.glob("*/pytorch_model.bin")))


def test_the_cli_converts_bin_without_torch(tmp_path):
    proc = run_python(f"""
        import sys
        from electra_bridge.converters.cli import main
        code = main(["convert", {str(spec.HF_BIN / "masked-lm")!r}, {str(tmp_path / "out")!r}, "--to", "safetensors"])
        assert "torch" not in sys.modules
        raise SystemExit(code)
    """, blocked=("torch",))
    assert proc.returncode == 0, proc.stderr
    assert_same_tensors(read(spec.HF_SAFETENSORS / "masked-lm"), read(tmp_path / "out"))


def rewrite(source: Path, target: Path, *, replace: dict[str, bytes] | None = None,
            compress: int = zipfile.ZIP_STORED) -> Path:
    """A copy of a torch archive with some records replaced, written by zipfile."""
    replace = replace or {}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", compression=compress) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
    return target


def record(name: str) -> str:
    with zipfile.ZipFile(BIN) as zf:
        return next(n for n in zf.namelist() if n.endswith(name))


class _Payload:
    """Unpickling this would create a marker file: proof of code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (_Payload(marker), {"weight": _Payload(marker)}):
        path = rewrite(BIN, tmp_path / "evil.bin", replace={record("/data.pkl"): pickle.dumps(payload, protocol=2)})
        with pytest.raises(FormatError, match="refusing .*pickled objects other than tensors .*global (builtins|io).open"):
            torch_zip.read(path)
        assert not marker.exists()


def test_a_foreign_persistent_id_is_refused(tmp_path):
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "os.system") if obj == "x" else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"weight": "x"})
    path = rewrite(BIN, tmp_path / "pid.bin", replace={record("/data.pkl"): buf.getvalue()})
    with pytest.raises(FormatError, match="persistent id"):
        torch_zip.read(path)


def test_a_compressed_record_is_refused(tmp_path):
    path = rewrite(BIN, tmp_path / "deflated.bin", compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(FormatError, match="is compressed"):
        torch_zip.read(path)


def test_a_short_storage_record_is_refused(tmp_path):
    data = next(n for n in zipfile.ZipFile(BIN).namelist() if "/data/" in n)
    path = rewrite(BIN, tmp_path / "short.bin", replace={data: b"\0" * 8})
    with pytest.raises(FormatError, match="bytes, .* expected"):
        torch_zip.read(path)


def test_a_big_endian_archive_is_refused(tmp_path):
    path = rewrite(BIN, tmp_path / "big.bin", replace={record("/byteorder"): b"big"})
    with pytest.raises(FormatError, match="big-endian"):
        torch_zip.read(path)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.97])
def test_a_truncated_archive_is_refused(cut, tmp_path):
    data = BIN.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(FormatError, match="not a readable PyTorch checkpoint|truncated"):
        state = torch_zip.read(tmp_path / "cut.bin")
        for t in state.values():
            t.load()


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04" + b"\0" * 200, pickle.dumps({"a": 1})])
def test_garbage_is_refused(content, tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(content)
    shutil.copy(spec.HF_BIN / "base" / "config.json", tmp_path)
    with pytest.raises(FormatError):
        read(tmp_path)


def test_a_legacy_file_without_torch_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "legacy.bin").write_bytes(torch_zip.LEGACY_MAGIC + b"\0" * 64)
    monkeypatch.setitem(__import__("sys").modules, "torch", None)   # import torch now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"legacy .*electra-bridge\[torch\]"):
        torch_zip.read(tmp_path / "legacy.bin")


def test_lazy_tensors_read_only_when_loaded(tmp_path):
    """Reading the archive costs its pickle; a tensor's bytes are read by its load()."""
    path = shutil.copy(BIN, tmp_path / "w.bin")
    state = torch_zip.read(path)
    data = next(n for n in zipfile.ZipFile(path).namelist() if "/data/" in n)
    key = data.rsplit("/", 1)[1]
    name = next(n for n, t in state.items() if t.key == key)
    with open(path, "r+b") as f:   # overwrite that storage's bytes after the archive was read
        f.seek(state[name].data_offset)
        f.write(b"\0" * state[name].dtype.itemsize * state[name].storage_numel)
    assert not state[name].load().any()
