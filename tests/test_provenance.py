"""The provenance record in every output folder (electra-bridge.json), checked independently:
source and written files against hashlib's sha256 of their bytes, per-tensor crc32c against the
tensors read back, ``verify --provenance`` catching a changed, missing or added file, and
``same_work`` (what batch uses to skip) telling an up-to-date output from a stale one."""

from __future__ import annotations

import hashlib
import json
import shutil

import google_crc32c
import numpy as np
from helpers import FIXTURES, run_cli

from electra_bridge.converters import convert, read
from electra_bridge.converters.engine import provenance

TF1 = FIXTURES / "tf1" / "pretraining"
HF = FIXTURES / "hf" / "question-answering"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_holds_the_digests_of_source_written_files_and_tensors(tmp_path):
    convert(TF1, tmp_path / "out", "safetensors")
    record = json.loads((tmp_path / "out" / "electra-bridge.json").read_text())
    source = {r["name"]: r for r in record["source_files"]}
    assert {"model.ckpt-1000.index", "model.ckpt-1000.data-00000-of-00001", "vocab.txt"} <= set(source)
    for name, row in source.items():
        assert row["sha256"] == sha(TF1 / name) and row["size"] == (TF1 / name).stat().st_size
    written = {r["name"]: r for r in record["files"]}
    on_disk = {p.name for p in (tmp_path / "out").iterdir()} - {"electra-bridge.json"}
    assert set(written) == on_disk and "README.md" in written and "model.safetensors" in written
    for name, row in written.items():
        assert row["sha256"] == sha(tmp_path / "out" / name)
    back = read(tmp_path / "out")
    assert set(record["tensors"]) == set(back.tensors)
    for name, row in record["tensors"].items():
        array = np.ascontiguousarray(back.array(name))
        assert row["crc32c"] == f"{google_crc32c.value(array.tobytes()):08x}", name
        assert row["shape"] == list(array.shape) and row["dtype"] == array.dtype.name
    assert record["options"]["to"] == "safetensors" and record["verification"]["ok"] is True


def test_tensor_checksums_equal_the_library_on_the_c_order_bytes_without_copying_them():
    """provenance.crc32c hands the array's own buffer to google_crc32c: the digest of ``tobytes()``
    for every stored dtype, a transposed view (its C-order bytes) and an empty tensor; no copy of a
    contiguous tensor is made."""
    import tracemalloc

    import ml_dtypes

    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 70)).astype(np.float32)
    for array in (base, base.T, base.astype(np.float16), base.astype(ml_dtypes.bfloat16), base[:0]):
        assert provenance.crc32c(array) == f"{google_crc32c.value(array.tobytes()):08x}"
    big = rng.standard_normal((1024, 1024)).astype(np.float32)
    tracemalloc.start()
    provenance.crc32c(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < big.nbytes / 100


def test_verify_provenance_names_every_changed_missing_and_added_file(tmp_path):
    out = tmp_path / "out"
    convert(HF, out, "msgpack")
    intact = run_cli("verify", out, "--provenance")
    assert intact.returncode == 0 and "as recorded" in intact.stdout
    weights = out / "flax_model.msgpack"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    (out / "vocab.txt").unlink()
    (out / "notes.txt").write_text("mine")
    proc = run_cli("verify", out, "--provenance", "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["exit_code"] == 1
    assert len(doc["problems"]) == 3, doc["problems"]
    assert any(p.startswith("flax_model.msgpack: changed") for p in doc["problems"])
    assert "notes.txt: not in the record" in doc["problems"] and "vocab.txt: missing" in doc["problems"]
    not_ours = run_cli("verify", HF, "--provenance")
    assert not_ours.returncode == 2 and "no electra-bridge.json" in not_ours.stderr


def test_same_work_tells_an_up_to_date_output_from_a_stale_one(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(HF, src)
    out = tmp_path / "out"
    convert(src, out, "h5")
    options = json.loads((out / "electra-bridge.json").read_text())["options"]
    digests = provenance.source_digests(src)
    assert provenance.same_work(out, digests, options)
    assert not provenance.same_work(out, digests, {**options, "to": "msgpack"})
    (src / "vocab.txt").write_text((src / "vocab.txt").read_text() + "extra\n")
    assert not provenance.same_work(out, provenance.source_digests(src), options)
    (out / "tf_model.h5").write_bytes(b"broken")
    assert not provenance.same_work(out, digests, options)


def test_same_work_hashes_the_output_only_when_the_record_matches(tmp_path, monkeypatch):
    """A stale output (other options, other source digests) is redone anyway: batch does not hash it."""
    out = tmp_path / "out"
    convert(HF, out, "h5")
    options = json.loads((out / "electra-bridge.json").read_text())["options"]
    digests = provenance.source_digests(HF)
    hashed = []
    real_check = provenance.check
    monkeypatch.setattr(provenance, "check", lambda folder: hashed.append(folder) or real_check(folder))
    assert not provenance.same_work(out, digests, {**options, "to": "msgpack"})
    assert not provenance.same_work(out, digests[1:], options)
    assert hashed == []
    assert provenance.same_work(out, digests, options) and hashed == [out]
