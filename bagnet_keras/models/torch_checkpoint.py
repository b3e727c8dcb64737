"""Read PyTorch checkpoints into NumPy arrays without torch and without running pickles.

Two on-disk formats exist: the zip archive of torch >= 1.6 (``data.pkl`` plus
one raw file per storage) and the legacy stream of earlier versions (five
pickles in a row, then the raw storages), which the authors' official
``.pth.tar`` files use. Both keep the object tree in a pickle; here it is
unpickled through an allow-list of the handful of globals a state dict needs
(an ordered dict, the tensor rebuild functions, the storage types). Any other
global is refused with an error naming it, before anything is called, so no
code from the file ever runs.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

# Storage class name -> NumPy dtype (little-endian on disk unless told).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class CheckpointError(pickle.UnpicklingError, ValueError):
    """A file that is not a readable PyTorch checkpoint (empty, truncated, HTML, corrupt).

    A ValueError, so callers and the command line treat it as bad input; still a
    ``pickle.UnpicklingError`` for code written against earlier releases.
    """


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle names a global outside the allow-list."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A typed storage whose bytes may arrive after the pickle (legacy format)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None
        self.views: list[tuple[_Storage, int]] = []


class _Tensor:
    """A tensor awaiting its storage: (storage, offset, size, stride)."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise pickle.UnpicklingError("A tensor refers to a storage that the checkpoint does not contain.")
        itemsize = data.dtype.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        if self.offset < 0 or any(s < 0 for s in self.stride) or needed > data.size:
            raise pickle.UnpicklingError(
                f"A tensor of size {self.size}, stride {self.stride} at offset {self.offset} "
                f"lies outside its storage of {data.size} elements: the checkpoint is corrupt."
            )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride]
        )
        return np.array(view)  # own the memory: views into storages must not alias


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("Malformed checkpoint: a tensor without a storage.")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"Refusing to load the checkpoint: its pickle names the global "
                f"'{module}.{name}', which a state dict does not need and which could run "
                "code. Only tensors, storages and ordered dicts are read; load the file "
                "with a trusted tool and save its plain state_dict if you trust it."
            ) from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"Unsupported persistent id in checkpoint: {pid!r}")
        return self._load_storage(pid[1:])


def _ascii(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.materialize()
    if isinstance(obj, dict):
        resolved = {k: _resolve(v) for k, v in obj.items()}
        return collections.OrderedDict(resolved) if isinstance(obj, collections.OrderedDict) else resolved
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


def _storage_type(value) -> _StorageType:
    if not isinstance(value, _StorageType):
        raise pickle.UnpicklingError(f"Unsupported storage type in checkpoint: {value!r}")
    return value


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path}: a torch zip checkpoint holds one data.pkl; found {pickles}.")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        storages: dict[str, _Storage] = {}

        def load_storage(data):
            storage_type, key, _location, numel = data[:4]
            key = _ascii(key)
            if key not in storages:
                dtype = _storage_type(storage_type).dtype.newbyteorder("<" if byteorder == "little" else ">")
                raw = archive.read(f"{prefix}data/{key}")
                storage = _Storage(dtype, len(raw) // dtype.itemsize)
                storage.array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as f:
            result = _SafeUnpickler(io.BytesIO(f.read()), load_storage).load()
    return _resolve(result)


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())

    def header(what: str):
        # The three header pickles hold only plain numbers, bools and dicts.
        return _SafeUnpickler(stream, lambda _: _fail(f"storage in the {what}")).load()

    magic = header("magic number")
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError(f"{path} is not a PyTorch checkpoint (bad magic number {magic!r}).")
    protocol = header("protocol version")
    if protocol != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"{path}: unsupported legacy protocol version {protocol!r}.")
    sys_info = header("system info")
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True

    storages: dict[str, _Storage] = {}

    def load_storage(data):
        storage_type, root_key, _location, numel, view_metadata = data
        root_key = _ascii(root_key)
        if root_key not in storages:
            storages[root_key] = _Storage(_storage_type(storage_type).dtype, int(numel))
        root = storages[root_key]
        if view_metadata is None:
            return root
        _view_key, offset, view_size = view_metadata
        view = _Storage(root.dtype, int(view_size))
        root.views.append((view, int(offset)))
        return view

    result = _SafeUnpickler(stream, load_storage).load()
    keys = _SafeUnpickler(stream, lambda _: _fail("storage key list")).load()
    for key in keys:
        key = _ascii(key)
        if key not in storages:
            raise pickle.UnpicklingError(f"{path}: storage {key!r} is listed but never used.")
        storage = storages[key]
        count = np.frombuffer(_read_exact(stream, 8, path), dtype="<i8")[0]
        dtype = storage.dtype.newbyteorder("<" if little else ">")
        raw = _read_exact(stream, int(count) * dtype.itemsize, path)
        storage.array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        for view, offset in storage.views:
            view.array = storage.array[offset : offset + view.numel]
    return _resolve(result)


def _read_exact(stream: io.BytesIO, n: int, path: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise pickle.UnpicklingError(f"{path} is truncated: expected {n} more bytes of tensor data, got {len(data)}.")
    return data


def _fail(what: str):
    raise pickle.UnpicklingError(f"Unexpected {what} in a legacy checkpoint header.")


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Read a PyTorch checkpoint into plain Python objects and NumPy arrays.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save``: the zip format (torch >= 1.6) or
        the legacy format (the official BagNet ``.pth.tar`` files).

    Returns
    -------
    object
        The saved object with every tensor as a NumPy array (views into shared
        storages resolved to copies with the right offsets and strides).

    Raises
    ------
    UnsafeCheckpointError
        The pickle names a global outside the allow-list (e.g. ``os.system``);
        nothing from the file has run.
    CheckpointError
        The file is not a checkpoint, or is empty, corrupt, truncated or an HTML
        page; a ValueError naming the file.

    Examples
    --------
    >>> from bagnet_keras.models.torch_checkpoint import load_checkpoint
    >>> state = load_checkpoint("bagnet32-2ddd53ed.pth.tar")  # doctest: +SKIP
    >>> state["fc.weight"].shape  # doctest: +SKIP
    (1000, 2048)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        raise CheckpointError(str(e) if path in str(e) else f"{path} is not a readable PyTorch checkpoint: {e}") from e
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {e}") from e


def state_dict_from_checkpoint(checkpoint: Any) -> dict[str, np.ndarray]:
    """The ``name -> array`` state dict inside a loaded checkpoint.

    Accepts a plain state dict or ``{'state_dict': ...}`` (training
    checkpoints), and strips the ``module.`` prefix that DataParallel adds.

    Examples
    --------
    >>> state_dict_from_checkpoint({"state_dict": {"module.fc.bias": 0}})
    {'fc.bias': 0}
    """
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(
            "Expected a state dict (a mapping of names to tensors); "
            f"the checkpoint holds a {type(checkpoint).__name__}."
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in checkpoint.items()}
