"""Keras' legacy ``save_weights`` h5 container, read and written with h5py alone (no TensorFlow).

A single file (``model.save_weights("x.h5")``, what ``TFElectraFor<Head>.save_pretrained`` writes):

* root attrs ``layer_names`` (the model's top-level Keras layers), ``backend``, ``keras_version``;
* one group per layer with attr ``weight_names``; each variable is the dataset
  ``<layer>/<weight name>``, a weight name being ``<instance scope>/<variable path>:0``. The
  instance scope is not stable (``..._1`` for the second model of a process), so a native
  name here is the weight name without its scope. A variable listed in another layer's
  group is named ``<group>/<variable path>``;
* an empty ``top_level_model_weights`` group.

A shard of ``save_pretrained(max_shard_size=...)`` is flatter: root ``layer_names`` lists
variable paths (no scope) and each variable is the dataset at that path (``write_shard``).

Keras stores string lists as variable-length utf-8 attributes and splits one whose
fixed-width numpy array would exceed the HDF5 object header (64512 bytes) into ``name0``,
``name1``, ... (tf_keras ``hdf5_format.py``).

Hostile files: every name is looked up one path component at a time and a soft or external
link is refused (an external link would open another file); a dataset is read only when it is
stored in this file (no external raw storage, no virtual dataset), with built-in filters only
(a plugin filter would load a shared library), and when its claimed size fits the bytes it
stores (an unfiltered dataset stores every byte it claims; a compressed one at most 1100:1),
so a dataset that claims gigabytes but stores nothing is refused before anything is allocated.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from electra_bridge.schemas import FormatError

from ..engine.format import NativeTensor

#: the tf-keras version whose save_weights layout the writer reproduces (the fixtures' writer)
KERAS_VERSION = "2.21.0"
HDF5_OBJECT_HEADER_LIMIT = 64512
TOP_LEVEL_GROUP = "top_level_model_weights"


def _strings(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def load_attribute(obj, name: str) -> list[str] | None:
    """A Keras string-list attribute, joining ``name0``, ``name1``, ... chunks; None if absent."""
    if name in obj.attrs:
        return _strings(obj.attrs[name])
    chunks = []
    while f"{name}{len(chunks)}" in obj.attrs:
        chunks.append(_strings(obj.attrs[f"{name}{len(chunks)}"]))
    return [v for chunk in chunks for v in chunk] if chunks else None


def save_attribute(obj, name: str, values: list[str]) -> None:
    """Store a string list as Keras does: variable-length strings, chunked above the header limit."""
    import h5py

    if not values:  # Keras writes np.asarray([]): an empty float64 array
        obj.attrs[name] = np.asarray([])
        return
    data = np.asarray([v.encode("utf8") for v in values], dtype=object)
    # Keras sizes a chunk as its fixed-width numpy array (count x longest), so we chunk where it would
    chunks = 1
    while any(len(part) * max(map(len, part)) > HDF5_OBJECT_HEADER_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    for i, part in enumerate(np.array_split(data, chunks)):
        obj.attrs.create(name if chunks == 1 else f"{name}{i}", part, dtype=h5py.string_dtype("utf-8"))


def open_file(path: Path):
    try:
        import h5py
    except ImportError as exc:  # h5py is a core dependency; this only guards broken installs
        raise FormatError("reading tf_model.h5 needs h5py: pip install h5py") from exc
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path} is not a readable HDF5 file: {exc}") from exc


#: HDF5's built-in filters and h5py's lzf: decoding them loads no plugin library
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
#: the most a compressed dataset may claim per stored byte (deflate's limit is ~1032:1)
MAX_COMPRESSION = 1100


def _get(group, name: str, path: Path):
    """``group[name]`` following hard links only: a soft or external link on the way is refused."""
    import h5py

    obj = group
    for part in [p for p in name.split("/") if p]:
        if not isinstance(obj, h5py.Group):
            return None
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
            raise FormatError(f"{path}: {name!r} goes through {kind}; electra-bridge reads only datasets stored "
                              "in the file itself")
        obj = obj.get(part)
    return obj


def check_dataset(path: Path, ds) -> None:
    """Refuse a dataset whose bytes are not all in this file or whose claimed size its storage cannot hold."""
    name = ds.name
    if ds.is_virtual:
        raise FormatError(f"{path}: dataset {name} is a virtual dataset (its data lives in other files); refused")
    if ds.external:
        raise FormatError(f"{path}: dataset {name} keeps its data in external files {ds.external[0][0]!r}...; "
                          "refused (electra-bridge reads only bytes inside the checkpoint)")
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    odd = [f for f in filters if f not in BUILTIN_FILTERS]
    if odd:
        raise FormatError(f"{path}: dataset {name} needs HDF5 filter {odd[0]}, not a built-in one; refused "
                          "(decoding it would load a plugin library)")
    try:
        claimed = int(np.prod(ds.shape, dtype=object)) * ds.dtype.itemsize
    except TypeError:
        raise FormatError(f"{path}: dataset {name} has no fixed shape and dtype") from None
    stored = ds.id.get_storage_size()
    too_big = claimed > stored if not filters else claimed > MAX_COMPRESSION * max(stored, 1)
    if claimed and too_big:
        raise FormatError(f"{path}: dataset {name} claims {claimed} bytes ({ds.shape} {ds.dtype}) but stores "
                          f"{stored}; the file is truncated or forged")


class _ReadHandle:
    """One read-only h5py handle shared by the loads of a scan's tensors, opened at the first load and
    closed when the last tensor holding it is dropped. Opening the file per load cost a few ms, some
    200 times per electra-base check."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._lock = threading.Lock()

    def dataset(self, name: str):
        with self._lock:
            if self._file is None:
                self._file = open_file(self.path)
                weakref.finalize(self, self._file.close)
            return _get(self._file, name, self.path)


def _tensor(path: Path, name: str, ds, handle: _ReadHandle) -> NativeTensor:
    check_dataset(path, ds)

    def load(dataset: str = ds.name) -> np.ndarray:
        try:
            ds = handle.dataset(dataset)
            check_dataset(path, ds)
            return ds[()]
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise FormatError(f"{path}: dataset {dataset} is unreadable (corrupt HDF5: {exc})") from None
    return NativeTensor(name, tuple(ds.shape), ds.dtype, load)


def _layer_names(f, path: Path) -> list[str]:
    layers = load_attribute(f, "layer_names")
    if layers is None:
        raise FormatError(f"{path} has no 'layer_names' attribute: not a Keras h5 weights file "
                          "(save it with TFElectraFor<Head>.save_pretrained)")
    return [*layers, *([TOP_LEVEL_GROUP] if TOP_LEVEL_GROUP in f else [])]


def _listed(f, path: Path) -> Iterator[tuple[str, str, object]]:
    """(layer or "", weight name as listed, dataset) of every variable ``layer_names`` leads to."""
    import h5py

    for entry in _layer_names(f, path):
        obj = _get(f, entry, path)
        if isinstance(obj, h5py.Dataset):  # a shard: the root lists the variables themselves
            yield "", entry, obj
        elif isinstance(obj, h5py.Group):
            for weight in load_attribute(obj, "weight_names") or []:
                ds = _get(obj, weight, path)
                if not isinstance(ds, h5py.Dataset):
                    raise FormatError(f"{path}: group {entry!r} lists weight {weight!r}, which is not in the file")
                yield entry, weight, ds
        else:
            raise FormatError(f"{path}: layer_names lists {entry!r} but the file has no such group or dataset")


def weight_names(path: Path) -> list[str]:
    """The weight names (instance scope included) the layer groups of a single file list."""
    with open_file(path) as f:
        return [weight for layer, weight, _ in _listed(f, path) if layer]


def scan(path: Path) -> dict[str, NativeTensor]:
    """Native name -> tensor for every variable of one file (a single file or a shard), lazily.

    Variables are enumerated through ``layer_names`` and each group's ``weight_names`` (what
    Keras and transformers load); a dataset no list names is reported under its full path,
    so strict accounting flags it as unexpected.
    """
    try:
        return _scan(path)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:  # h5py on corrupt files
        raise FormatError(f"{path} is not a readable HDF5 weights file (corrupt: {exc})") from None


def _scan(path: Path) -> dict[str, NativeTensor]:
    import h5py

    found: dict[str, NativeTensor] = {}
    handle = _ReadHandle(path)
    with open_file(path) as f:
        listed = set()
        for layer, weight, ds in _listed(f, path):
            rest = weight.partition("/")[2] if layer else weight
            native = rest if not layer or rest.split("/", 1)[0] == layer else f"{layer}/{rest}"
            if native in found:
                raise FormatError(f"{path}: weight {native!r} is listed twice")
            found[native] = _tensor(path, native, ds, handle)
            listed.add(ds.name)
        unlisted = []
        f.visititems(lambda _, obj: unlisted.append(obj) if isinstance(obj, h5py.Dataset)
                     and obj.name not in listed else None)
        found.update((ds.name, _tensor(path, ds.name, ds, handle)) for ds in unlisted)
    return found


def write(path: Path, layers: Sequence[str], groups: Mapping[str, Sequence[tuple[str, NativeTensor]]]) -> None:
    """A single file: ``layers`` in ``layer_names`` order; each group's (weight name, tensor) in
    ``weight_names`` order, each tensor loaded only when its dataset is written."""
    import h5py

    with h5py.File(path, "w") as f:
        save_attribute(f, "layer_names", list(layers))
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION
        for layer in sorted(layers):  # Keras creates the groups sorted by name
            group = f.create_group(layer)
            save_attribute(group, "weight_names", [name for name, _ in groups[layer]])
            for name, tensor in groups[layer]:
                group.create_dataset(name, data=tensor.load())
        save_attribute(f.create_group(TOP_LEVEL_GROUP), "weight_names", [])


def _save_transformers_attribute(obj, name: str, values: list[bytes]) -> None:
    """transformers' own ``tf_utils.save_attributes_to_hdf5_group`` (what its sharded save calls): the
    list itself when its fixed-width array fits the object header, else ``name0``, ``name1``, ... arrays."""
    data = np.asarray(values)
    chunks = 1
    while any(part.nbytes > HDF5_OBJECT_HEADER_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = values
        return
    for i, part in enumerate(np.array_split(data, chunks)):
        obj.attrs[f"{name}{i}"] = part


def write_shard(path: Path, tensors: Sequence[NativeTensor]) -> None:
    """One shard as ``TFPreTrainedModel.save_pretrained(max_shard_size=...)`` writes it: each variable the
    dataset at its path (the weight name without the instance scope), created in name order and filled
    from its tensor (loaded only then), and the root ``layer_names`` listing those paths -- no groups'
    ``weight_names``, no ``backend`` or ``keras_version``. An empty shard (transformers' split can
    make one) lists nothing."""
    import h5py

    ordered = sorted(tensors, key=lambda t: t.name)
    with h5py.File(path, "w") as f:
        for tensor in ordered:
            arr = np.asarray(tensor.load())
            f.create_dataset(tensor.name, arr.shape, dtype=arr.dtype)[...] = arr
        _save_transformers_attribute(f, "layer_names", [t.name.encode("utf8") for t in ordered])
