"""A one-file copy of a local store's status array, keyed by its chunk files.

The status array is chunked like the features, so that processes writing disjoint chunks
never share a file: at a million rows that is about 500 files, and zarr takes 0.2 s to read
them (most of it per-chunk overhead), a fifth of `status`'s budget. The copy (`.copy.npz` in
the array's directory, where zarr ignores it) holds the whole array and the key it was read
under: the name, inode, size and modification time of every file of the array. zarr replaces
a chunk file whole (a new inode) on every write, so a copy whose key matches is the array.
The key is taken before the array is read: a chunk written during the read changes the key,
and the copy is read again next time. Writing it is best effort; deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import zarr

from patchwork_cli.util.atomic import atomic_write

COPY_NAME = ".copy.npz"
MIN_CHUNKS = 32  # below this zarr reads the array in a few milliseconds


def read_status(array: zarr.Array) -> np.ndarray:
    """array[:], from the copy beside its chunks when that matches them."""
    directory = _local_directory(array)
    if directory is None or array.nchunks < MIN_CHUNKS:
        return array[:]
    key = _files_key(directory)
    copy = directory / COPY_NAME
    try:
        with np.load(copy) as stored:
            if str(stored["key"]) == key:
                return stored["status"]
    except (OSError, KeyError, ValueError):
        pass
    status = array[:]
    _write_copy(copy, status, key)
    return status


def _local_directory(array: zarr.Array) -> Path | None:
    root = getattr(array.store, "root", None)  # a LocalStore's directory; other stores have none
    return None if root is None else Path(root) / array.path


def _files_key(directory: Path) -> str:
    entries = []
    for folder in (directory, directory / "c"):
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    if entry.is_file() and not entry.name.startswith("."):  # the copy, and its temporary files
                        stat = entry.stat()
                        entries.append(f"{folder.name}/{entry.name}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}")
        except FileNotFoundError:
            pass  # no chunk written yet
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _write_copy(copy: Path, status: np.ndarray, key: str) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, status=status, key=np.array(key))
    try:
        with atomic_write(copy, mode="wb", encoding=None) as handle:
            handle.write(buffer.getvalue())
    except OSError:
        pass  # only a speed-up: a read-only or full disk goes without it
