"""Hugging Face hub cache folders (``models--org--name``) read locally: engine/hf_cache.py + files.py.

The caches are laid out exactly as huggingface_hub's file_download.py lays them out (blobs named by
sha256 for LFS files and by git blob sha1 for the rest, ``snapshots/<commit>/`` entries that are
relative symlinks into ``../../blobs/``, ``refs/main`` holding the commit), and huggingface_hub's
own ``scan_cache_dir`` / ``try_to_load_from_cache`` and transformers' ``from_pretrained(...,
local_files_only=True)`` confirm that layout before our reader is trusted with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, assert_same_tensors, max_abs

from electra_bridge.converters import cli, read
from electra_bridge.converters.engine import files, hf_cache
from electra_bridge.schemas import FormatError

REPO_ID = "google/electra-bridge-tiny"
LFS_SUFFIXES = (".safetensors", ".h5", ".msgpack", ".bin")

def etag(name: str, data: bytes) -> str:
    """What the hub names a blob: sha256 of an LFS file, else the git blob sha1 (``blob <len>\\0`` + bytes)."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_cache(hub: Path, source: Path, repo_id: str = REPO_ID, commit: str | None = None) -> tuple[Path, Path]:
    """A hub cache repo folder holding every file of ``source`` at ``commit``: (repo folder, snapshot)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}:{source.name}".encode()).hexdigest()
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / etag(file.name, data)
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)   # the hub writes the sha with no newline
    return repo, snap


def sharded_safetensors(tmp: Path) -> Path:
    """fixtures/hf/masked-lm saved by transformers with max_shard_size: model-0000x-of-0000n + index."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp / "sharded-safetensors"
    model = transformers.ElectraForMaskedLM.from_pretrained(FIXTURES / "hf" / "masked-lm")
    model.save_pretrained(out, max_shard_size="40KB", safe_serialization=True)
    assert (out / "model.safetensors.index.json").is_file() and not (out / "model.safetensors").exists()
    return out


SOURCES = {
    "safetensors": lambda tmp: FIXTURES / "hf" / "masked-lm",
    "h5": lambda tmp: FIXTURES / "hf-h5" / "sequence-classification",
    "msgpack": lambda tmp: FIXTURES / "hf-flax" / "token-classification",
    "h5-sharded": lambda tmp: FIXTURES / "hf-h5-sharded" / "masked-lm",
    "safetensors-sharded": sharded_safetensors,
}


# ---- the layout is the hub's ------------------------------------------------------------------------

def test_layout_is_the_hubs_and_resolves_through_refs_main(tmp_path):
    hub_api = pytest.importorskip("huggingface_hub")
    repo, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm")
    info = hub_api.scan_cache_dir(tmp_path / "hub")
    assert not info.warnings, info.warnings
    (found,) = info.repos
    assert found.repo_id == REPO_ID and found.repo_type == "model"
    (revision,) = found.revisions
    assert revision.commit_hash == snap.name and set(revision.refs) == {"main"}
    assert Path(hub_api.try_to_load_from_cache(REPO_ID, "config.json", cache_dir=tmp_path / "hub")) == snap / "config.json"
    assert all((snap / n).is_symlink() and not os.path.isabs(os.readlink(snap / n)) for n in os.listdir(snap))

    assert hf_cache.resolve(repo) == (snap, repo.resolve())
    assert hf_cache.resolve(snap) == (snap, repo.resolve())
    assert hf_cache.resolve(snap / "model.safetensors") == (snap / "model.safetensors", repo.resolve())
    assert hf_cache.resolve(FIXTURES / "hf" / "masked-lm") == (FIXTURES / "hf" / "masked-lm", None)
    assert hf_cache.repo_id(repo) == REPO_ID
    assert files.source_root(snap) == files.source_root(snap / "config.json") == repo.resolve()


def test_revision_by_ref_name_and_commit_prefix(tmp_path):
    repo, main = make_cache(tmp_path / "hub", FIXTURES / "hf" / "base", commit="a" * 40)
    _, other = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm", commit="b" * 40)
    (repo / "refs" / "main").write_text(main.name)                  # make_cache moved main to the last commit
    (repo / "refs" / "pr").mkdir()
    (repo / "refs" / "pr" / "1").write_text(other.name + "\n")
    assert hf_cache.resolve(repo)[0] == main
    assert hf_cache.resolve(repo, "pr/1")[0] == other
    assert hf_cache.resolve(repo, "bbbbbbb")[0] == other
    assert read(hf_cache.resolve(repo, "pr/1")[0]).head == "masked-lm"
    for bad, message in [("bbbb", "without refs/bbbb"), ("c" * 7, "no snapshot of commit"),
                         ("../../etc", "neither a ref name"), ("v1", "without refs/v1")]:
        with pytest.raises(FormatError, match=message):
            hf_cache.resolve(repo, bad)
    with pytest.raises(FormatError, match="already one snapshot"):
        hf_cache.resolve(main, "main")


# ---- reading: the snapshot folder, and the repo folder through resolve -----------------------------

@pytest.mark.parametrize("kind", list(SOURCES))
def test_snapshot_reads_like_the_plain_folder(tmp_path, kind):
    source = SOURCES[kind](tmp_path)
    repo, snap = make_cache(tmp_path / "hub", source)
    want = read(source)
    assert_same_tensors(read(snap), want)
    assert_same_tensors(read(hf_cache.resolve(repo)[0]), want)
    assert read(snap).assets == want.assets


@pytest.mark.parametrize("kind", list(SOURCES))
def test_repo_folder_reads_directly(tmp_path, kind):
    source = SOURCES[kind](tmp_path)
    repo, _ = make_cache(tmp_path / "hub", source)
    assert_same_tensors(read(repo), read(source))


def test_cli_inspect_and_convert_a_snapshot(tmp_path, capsys):
    _, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "sequence-classification")
    capsys.readouterr()
    assert cli.main(["inspect", str(snap), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["format"] == "safetensors" and shown["head"] == "sequence-classification", shown
    assert cli.main(["convert", str(snap), str(tmp_path / "out"), "--to", "msgpack", "--quiet"]) == 0
    assert_same_tensors(read(tmp_path / "out"), read(FIXTURES / "hf" / "sequence-classification"))
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == (snap / "vocab.txt").read_bytes()


def test_cli_inspect_a_repo_folder(tmp_path, capsys):
    repo, _ = make_cache(tmp_path / "hub", FIXTURES / "hf" / "sequence-classification")
    code = cli.main(["inspect", str(repo), "--json"])
    if code != 0:   # the CLI reports the FormatError as exit 2: re-raise it for the strict xfail
        read(repo)
    assert json.loads(capsys.readouterr().out)["head"] == "sequence-classification"


# ---- confinement: blobs inside the repo folder are fine, anything leaving it is not -------------------

def relink(link: Path, target: Path) -> None:
    link.unlink()
    os.symlink(os.path.relpath(target, link.parent), link)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "vocab.txt"])
def test_symlink_leaving_the_repo_folder_is_refused(tmp_path, name):
    _, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm")
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    shutil.copyfile(FIXTURES / "hf" / "masked-lm" / name, outside)
    relink(snap / name, outside)
    with pytest.raises(FormatError, match="outside"):
        read(snap)


def test_blob_that_is_no_regular_file_is_refused(tmp_path):
    _, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm")
    blob = (snap / "model.safetensors").resolve()
    blob.unlink()
    os.mkfifo(blob)   # a FIFO inside blobs/: confinement widened, the regular-file rule is not
    assert files.within(snap / "model.safetensors", snap)
    with pytest.raises(FormatError, match="not a regular file"):
        files.confined(snap / "model.safetensors", snap.resolve(), "weights file")
    with pytest.raises(FormatError):
        read(snap)


def test_within_is_the_check_a_shard_needs(tmp_path):
    _, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm")
    assert files.within(snap / "model.safetensors", snap) and files.within(snap / "config.json", snap.resolve())
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    relink(snap / "model.safetensors", tmp_path / "outside.safetensors")
    assert not files.within(snap / "model.safetensors", snap)


def test_symlink_into_another_repos_blobs_is_refused(tmp_path):
    _, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm")
    other, _ = make_cache(tmp_path / "hub", FIXTURES / "hf" / "masked-lm", repo_id="someone/else")
    blob = next((other / "blobs").glob("*"))
    relink(snap / "config.json", blob)
    with pytest.raises(FormatError, match="outside"):
        read(snap)


def test_outside_a_cache_symlinks_stay_confined_to_the_folder(tmp_path):
    """A folder merely named like a snapshot (no models--*/snapshots/ around it) is not widened."""
    fake = tmp_path / "snapshots" / ("c" * 40)
    fake.mkdir(parents=True)
    for f in (FIXTURES / "hf" / "masked-lm").iterdir():
        shutil.copyfile(f, fake / f.name)
    (tmp_path / "model.safetensors").write_bytes((fake / "model.safetensors").read_bytes())
    relink(fake / "model.safetensors", tmp_path / "model.safetensors")
    assert hf_cache.resolve(fake) == (fake, None)
    with pytest.raises(FormatError, match="outside"):
        read(fake)
    assert not files.within(fake / "model.safetensors", fake)


# ---- what is missing, and how to get it -----------------------------------------------------------

def test_repo_folder_without_refs_main_says_how_to_fix(tmp_path):
    repo, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "base")
    (repo / "refs" / "main").unlink()
    with pytest.raises(FormatError) as exc:
        hf_cache.resolve(repo)
    message = str(exc.value)
    assert "without refs/main" in message and f"huggingface-cli download {REPO_ID}" in message
    assert str(snap) in message   # the snapshot that is present, to pass instead


def test_missing_snapshot_names_the_commit(tmp_path):
    repo, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "base")
    shutil.rmtree(snap)
    with pytest.raises(FormatError) as exc:
        hf_cache.resolve(repo)
    message = str(exc.value)
    assert f"snapshots/{snap.name}/ is missing" in message and "huggingface-cli download" in message
    (repo / "refs" / "main").write_text("not a commit")
    with pytest.raises(FormatError, match="not a 40-hex commit sha"):
        hf_cache.resolve(repo)


# ---- the oracle: transformers reads the same cache the same way -----------------------------------

def test_transformers_agrees_on_the_snapshot(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from electra_bridge.runtimes import CheckpointRunner, probe_batch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo, snap = make_cache(tmp_path / "hub", FIXTURES / "hf" / "pretraining")
    by_id = transformers.AutoConfig.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub", local_files_only=True)
    ours = read(hf_cache.resolve(repo)[0])
    by_path = transformers.AutoConfig.from_pretrained(snap)
    assert {**by_id.to_dict(), "_name_or_path": None} == {**by_path.to_dict(), "_name_or_path": None}
    assert by_id.hidden_size == ours.config.hidden_size and by_id.num_hidden_layers == ours.config.num_hidden_layers
    model = transformers.ElectraModel.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub", local_files_only=True)
    model.eval()
    batch = probe_batch(ours.config, "base")
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    got = CheckpointRunner(ours, "numpy").run("base", batch).outputs["last_hidden_state"]
    assert got.shape == want.shape
    err = max_abs(got, want)
    rel = err / float(np.max(np.abs(want)))
    assert err < 1e-5 and rel < 1e-5, (err, rel)


# ---- ONNX external data: a snapshot's model.onnx.data is a link into blobs/ too -----------------------

def onnx_with_external_data(tmp: Path, monkeypatch) -> Path:
    """fixtures/hf/pretraining exported to ONNX with its weights in model.onnx.data (the >2 GB layout,
    forced here with a 1 KiB threshold)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from electra_bridge.converters.engine.pipeline import export
    from electra_bridge.converters.formats import onnx as onnx_format

    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_BYTES", 1024)
    out = tmp / "onnx-external"
    out.mkdir()
    written = {p.name for p in export(onnx_format.FORMAT, read(FIXTURES / "hf" / "pretraining"), out)}
    assert {"model.onnx", "model.onnx.data"} <= written
    return out


def test_onnx_external_data_in_a_snapshot_runs_and_verifies(tmp_path, monkeypatch, capsys):
    repo, snap = make_cache(tmp_path / "hub", onnx_with_external_data(tmp_path, monkeypatch))
    assert (snap / "model.onnx.data").is_symlink()
    assert (snap / "model.onnx.data").resolve().parent == repo.resolve() / "blobs"   # outside the snapshot folder
    # as a user types it: the repo folder against the checkpoint it came from; EQUAL exits 0
    assert cli.main(["verify", str(repo), str(FIXTURES / "hf" / "pretraining"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["exit_code"] == 0
    assert cli.main(["inspect", str(snap), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "onnx"


def test_onnx_external_data_leaving_the_repo_folder_is_refused(tmp_path, monkeypatch, capsys):
    _, snap = make_cache(tmp_path / "hub", onnx_with_external_data(tmp_path, monkeypatch))
    outside = tmp_path / "elsewhere" / "model.onnx.data"
    outside.parent.mkdir()
    shutil.copyfile(snap / "model.onnx.data", outside)
    relink(snap / "model.onnx.data", outside)
    assert cli.main(["verify", str(snap), str(FIXTURES / "hf" / "pretraining")]) == 2
    err = capsys.readouterr().err
    assert "keeps its data in 'model.onnx.data', outside" in err and str(tmp_path / "hub") in err
