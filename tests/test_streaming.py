"""Streaming: readers hand out tensors lazily, writers write one tensor at a time (issue 13 item 2).

The msgpack reader walks the file's structure and reads one array's bytes per ``load()``
(converters/formats/msgpack_lazy.py); it must give exactly what the eager decoder gives, refuse
what it refuses, and allocate far less than the file. Memory is measured with tracemalloc
(numpy's buffers and Python objects; HDF5's own C allocations are not traced). Every format's
writer and reader is held to "near one tensor", not "near the file".
"""

from __future__ import annotations

import gc
import tracemalloc

import msgpack
import numpy as np
import pytest
from helpers import FIXTURES, HEADS, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from electra_bridge.converters import read, write
from electra_bridge.converters.formats import msgpack_flax, msgpack_lazy
from electra_bridge.schemas import BridgeError, Checkpoint, FormatError, head_shapes

FLAX = FIXTURES / "hf-flax"
MASKED = FLAX / "masked-lm" / "flax_model.msgpack"


def _loaded(path) -> dict[str, np.ndarray]:
    return {name: t.load() for name, t in msgpack_lazy.scan(path).items()}


def _assert_same(lazy: dict, eager: dict) -> None:
    assert list(lazy) == list(eager)
    for name, arr in eager.items():
        assert lazy[name].dtype == arr.dtype and lazy[name].shape == arr.shape, name
        assert np.array_equal(lazy[name].view(np.uint8), arr.view(np.uint8)), name   # bit for bit (NaN too)


# ---- the lazy reader gives what the eager decoder gives ---------------------------------------

@pytest.mark.parametrize("name", [*HEADS, "untied-masked-lm"])
def test_lazy_scan_equals_eager_decode(name):
    path = FLAX / name / "flax_model.msgpack"
    tensors = msgpack_lazy.scan(path)
    eager = msgpack_flax.read_file(path)
    assert {n: (t.shape, t.dtype) for n, t in tensors.items()} == {n: (a.shape, a.dtype) for n, a in eager.items()}
    _assert_same({n: t.load() for n, t in tensors.items()}, eager)


def test_chunked_arrays_bfloat16_and_repeated_keys(tmp_path, monkeypatch):
    import ml_dtypes

    rng = np.random.default_rng(0)
    arrays = {"a/big": rng.standard_normal((7, 9)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float16),
              "c/d": rng.standard_normal((3, 2)).astype(ml_dtypes.bfloat16), "e": np.zeros((0, 4), np.float32)}
    monkeypatch.setattr(msgpack_flax, "MAX_CHUNK_SIZE", 64)
    path = tmp_path / "x.msgpack"
    path.write_bytes(msgpack_flax.encode(arrays))
    assert b"__msgpack_chunked_array__" in path.read_bytes()
    _assert_same(_loaded(path), msgpack_flax.read_file(path))
    leaf = msgpack.ExtType(1, msgpack.packb(((2,), "float32", np.ones(2, np.float32).tobytes()), use_bin_type=True))
    # a repeated key: the last value wins, as msgpack's dict does (first key's place, last value)
    repeated = b"\x82\xa1w" + msgpack.packb({"x": leaf}) + b"\xa1w" + msgpack.packb(leaf)
    path.write_bytes(repeated)
    _assert_same(_loaded(path), msgpack_flax.read_file(path))


MUTATIONS = st.fixed_dictionaries({
    "flips": st.lists(st.tuples(st.integers(0, MASKED.stat().st_size - 1), st.integers(1, 255)), max_size=6),
    "cut": st.one_of(st.none(), st.integers(0, MASKED.stat().st_size)),
})


@settings(max_examples=300, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=MUTATIONS)
def test_mutated_files_read_as_the_eager_decoder_reads_them_or_are_refused(tmp_path, m):
    """Differential: whatever the lazy reader accepts, the eager decoder accepts too, with the same arrays;
    anything else is a FormatError (never another exception)."""
    data = bytearray(MASKED.read_bytes())
    for pos, mask in m["flips"]:
        data[pos] ^= mask
    if m["cut"] is not None:
        del data[m["cut"]:]
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(bytes(data))
    try:
        lazy = _loaded(path)
    except BridgeError:
        return
    _assert_same(lazy, msgpack_flax.decode(bytes(data)))


@pytest.mark.parametrize("content, message", [
    (b"\xdf\xff\xff\xff\xff" + b"\xa1a\xc0" * 10, "claims 4294967295 entries"),
    (b"\x81\xa6params\x81\xa1x\xc6\xff\xff\xff\xf0" + b"\0" * 100, "needs 4294967280 bytes"),
    (b"\x81\xa1a" * 100_000 + b"\xc0", "nests deeper than"),
    (b"\x81\x01" + msgpack.packb(1), "not a string"),
    (msgpack.packb({"w": msgpack.ExtType(1, msgpack.packb(((1 << 20, 1 << 20), "float32", b"\0" * 64),
                                                          use_bin_type=True))}), "needs 4398046511104 bytes"),
    (msgpack.packb({"w": msgpack.ExtType(1, msgpack.packb(((2,), "O", b"\0" * 16), use_bin_type=True))}), "dtype 'O'"),
    (msgpack.packb({"w": msgpack.ExtType(3, b"\x93\x90\xa7float32\xc4\x04" + bytes(4))}), "is a numpy scalar"),
    (msgpack.packb({"w": [1, 2]}), "is a list"),
    (b"\x81\xa1w\xc1", "never uses"),
])
def test_hostile_structures_are_refused_before_anything_is_allocated(tmp_path, content, message):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(content)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=message):
            msgpack_lazy.scan(path)
        assert tracemalloc.get_traced_memory()[1] < 4 << 20   # a claim is checked, never allocated
    finally:
        tracemalloc.stop()


def test_a_file_shrunk_after_the_scan_is_refused_on_load(tmp_path):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(MASKED.read_bytes())
    tensors = msgpack_lazy.scan(path)
    path.write_bytes(MASKED.read_bytes()[:1000])
    with pytest.raises(FormatError, match="truncated"):
        for t in tensors.values():
            t.load()


# ---- memory: one tensor, not the file ---------------------------------------------------------

@pytest.fixture(scope="module")
def bigger(tmp_path_factory):
    """A 24 MB discriminator (hidden 256, 6 layers, vocab 8192) as safetensors, and its arrays."""
    cfg = read(spec.HF_SAFETENSORS / "pretraining").config.replace(
        hidden_size=256, num_hidden_layers=6, vocab_size=8192, intermediate_size=1024, embedding_size=128,
        num_attention_heads=4, max_position_embeddings=512)
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal(s).astype(np.float32) for n, s in head_shapes(cfg, "pretraining").items()}
    src = tmp_path_factory.mktemp("bigger") / "src"
    write(Checkpoint(cfg, "pretraining", arrays), src, "safetensors")
    return src, arrays


def _peak(fn) -> tuple[object, int]:
    gc.collect()
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_msgpack_read_of_one_tensor_allocates_far_less_than_the_file(bigger, tmp_path):
    src, arrays = bigger
    write(read(src), tmp_path / "mp", "msgpack")
    path = tmp_path / "mp" / "flax_model.msgpack"
    size = path.stat().st_size
    name = "electra/encoder/layer/3/intermediate/dense/kernel"
    tensors, scan_peak = _peak(lambda: msgpack_lazy.scan(path))
    one, load_peak = _peak(tensors[name].load)
    _, eager_peak = _peak(lambda: msgpack_flax.read_file(path))
    print(f"msgpack {size / 1e6:.1f} MB: scan peak {scan_peak / 1e6:.2f} MB, one {one.nbytes / 1e6:.2f} MB tensor "
          f"loaded at peak {load_peak / 1e6:.2f} MB; the eager decode peaked at {eager_peak / 1e6:.1f} MB")
    assert np.array_equal(one, arrays["encoder.layer.3.intermediate.dense.weight"].T)
    assert scan_peak < size / 50 and load_peak < one.nbytes + (64 << 10)
    assert eager_peak > 0.9 * size   # the eager decoder held the whole file: what the lazy one avoids


@pytest.mark.parametrize("fmt", ["safetensors", "h5", "msgpack", "tf1"])
def test_every_format_writes_and_reads_one_tensor_at_a_time(bigger, tmp_path, fmt):
    src, arrays = bigger
    ckpt = read(src)
    largest = max(a.nbytes for a in arrays.values())
    _, write_peak = _peak(lambda: write(ckpt, tmp_path / fmt, fmt))
    size = sum(p.stat().st_size for p in (tmp_path / fmt).iterdir() if p.is_file())
    back, list_peak = _peak(lambda: read(tmp_path / fmt))
    name = "encoder.layer.3.intermediate.dense.weight"
    one, load_peak = _peak(lambda: back.array(name))
    print(f"{fmt}: {size / 1e6:.1f} MB written at peak {write_peak / 1e6:.2f} MB (largest tensor "
          f"{largest / 1e6:.2f} MB); read listed at {list_peak / 1e6:.2f} MB, one {one.nbytes / 1e6:.2f} MB tensor "
          f"loaded at {load_peak / 1e6:.2f} MB")
    assert np.array_equal(one, arrays[name])
    assert write_peak < 2 * largest + (1 << 20)            # one tensor (and a layout copy of it), never the model
    assert list_peak < size / 20
    assert load_peak < 2.5 * one.nbytes + (256 << 10)     # the bytes, a transposed copy, the finiteness mask


def test_the_finite_check_refuses_past_its_first_chunk_without_a_tensor_sized_temporary():
    """pipeline.check_finite walks a tensor a chunk at a time: a NaN or Inf anywhere is named with its
    count and first index, in every stored dtype, and a finite tensor costs no temporary near its size."""
    import ml_dtypes

    from electra_bridge.converters.engine.pipeline import FINITE_CHUNK, check_finite

    rows = 3 * FINITE_CHUNK // 512 + 7          # three chunks and a ragged tail
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        arr = np.zeros((rows, 512), dtype=dtype)
        tracemalloc.start()
        check_finite(arr, "w", "src")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < FINITE_CHUNK + 65536 < arr.size, (dtype, peak)   # the scratch, not a bool per element
        for value, where in ((np.nan, (rows - 1, 511)), (np.inf, (2 * FINITE_CHUNK // 512 + 1, 3)),
                             (-np.inf, (0, 0))):
            bad = arr.copy()
            bad[where] = value
            bad[rows - 1, 0] = value
            with pytest.raises(FormatError, match=rf"src: tensor w holds 2 NaN/Inf values \(first at index "
                                                  rf"\[{min(where, (rows - 1, 0))[0]}, {min(where, (rows - 1, 0))[1]}\]\)"):
                check_finite(bad, "w", "src")
    check_finite(np.zeros((0, 3), np.float32), "empty", "src")


def test_tensor_bytes_are_a_read_only_mapping_that_ends_with_the_array(tmp_path):
    """engine/files.mapped_bytes, what every reader loads a tensor with: the file's bytes at any offset
    (unaligned to a page too), read-only, no Python allocation near their size, None past the end,
    and the mapping gone from /proc/self/maps once the array and its views are."""
    from electra_bridge.converters.engine.files import mapped_bytes

    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8)
    path = tmp_path / "blob"
    path.write_bytes(data.tobytes())

    def maps() -> int:
        return sum(str(path) in line for line in open("/proc/self/maps"))

    for offset, n in ((0, data.size), (4097, 1 << 20), (data.size - 3, 3)):
        tracemalloc.start()
        got = mapped_bytes(path, offset, n)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert np.array_equal(got, data[offset:offset + n]) and not got.flags.writeable and peak < 65536
        view = got.view(np.uint8)[1:]
        del got
        gc.collect()
        assert maps() == 1 and view[0] == data[offset + 1]
        del view
        gc.collect()
        assert maps() == 0
    assert mapped_bytes(path, data.size - 3, 4) is None and mapped_bytes(path, -1, 1) is None
    assert mapped_bytes(path, data.size, 0).size == 0 and mapped_bytes(path, data.size + 1, 0) is None


def test_tensors_read_from_safetensors_bin_and_tf1_are_read_only_mappings_and_copies_are_free_to_change():
    """What the README's Python API section says: a canonical-layout tensor read from these files is a
    read-only array mapped from the file; a copy is an ordinary array."""
    for path, name in ((FIXTURES / "hf" / "masked-lm", "embeddings.word_embeddings.weight"),
                       (FIXTURES / "hf-bin" / "masked-lm", "embeddings.word_embeddings.weight"),
                       (FIXTURES / "tf1" / "pretraining", "embeddings.word_embeddings.weight")):
        arr = read(path).array(name)
        assert not arr.flags.writeable and not arr.flags.owndata, path
        with pytest.raises(ValueError, match="read-only"):
            arr[0, 0] = 1.0
        mine = np.array(arr)
        mine[0, 0] = 1.0
        assert mine[0, 0] == 1.0


def test_past_the_mapping_budget_tensor_bytes_are_read_read_only_and_the_budget_comes_back(tmp_path, monkeypatch):
    """Each mapping holds a file descriptor: beyond files.map_budget() live mappings the bytes are read
    instead (equal, read-only, no mapping), and dropping the mapped arrays frees their budget."""
    from electra_bridge.converters.engine import files

    data = np.arange(1 << 16, dtype=np.uint8)
    path = tmp_path / "blob"
    path.write_bytes(data.tobytes())
    gc.collect()
    budget = files._maps["live"] + 2
    monkeypatch.setattr(files, "map_budget", lambda: budget)
    held = [files.mapped_bytes(path, 4096 * i, 4096) for i in range(5)]
    mapped = sum(str(path) in line for line in open("/proc/self/maps"))
    assert mapped == 2 and all(not a.flags.writeable for a in held)
    assert all(np.array_equal(a, data[4096 * i:4096 * (i + 1)]) for i, a in enumerate(held))
    before = files._maps["live"]
    del held
    gc.collect()
    assert files._maps["live"] == before - 2


def test_a_conversion_runs_under_a_low_file_descriptor_limit(tmp_path):
    """The CLI as a user with ``ulimit -n 40`` runs it: the 43 tensors of the fixture, kept for the check,
    would hold 43 descriptors mapped; past files.map_budget() they are read instead. (The limit is set by
    the shell, not a preexec_fn: forking a process that has JAX's threads risks a deadlock.)"""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "electra-bridge"
    proc = subprocess.run(["sh", "-c", 'ulimit -n 40 && exec "$0" "$@"', str(exe), "convert",
                           str(FIXTURES / "hf" / "pretraining"), str(tmp_path / "out"), "--to", "safetensors",
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()
