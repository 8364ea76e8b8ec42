"""Stopping an extraction before the feature store's disk fills.

A million 7x7x1280 feature maps take about 20 GB even compressed; a disk that fills
half-way through a chunk write fails in whatever way the file system chooses. So after
each chunk it writes, extract measures the bytes that chunk's files took, projects the
store's growth over the chunks still to come, and stops with a one-line error while
there is still room: every chunk written so far is kept, and the same command resumes
once there is space. Only local stores are watched; an object store has no free space
to ask about.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from patchwork_cli.errors import PatchworkError

SAFETY_FACTOR = 1.05  # chunks compress differently; keep 5% beyond the projection
RESERVE_BYTES = 16 * 2**20  # and room for the status, reason and failure files


class DiskGuard:
    def __init__(self, directory: Path, arrays: list, chunks_to_write: int):
        self.directory = directory
        self.arrays = arrays  # the store's row-chunked zarr arrays
        self.remaining = chunks_to_write
        self.chunks = 0
        self.bytes = 0

    @classmethod
    def for_store(cls, location: str, store, chunks_to_write: int) -> DiskGuard | None:
        """The guard of a local store's extraction of `chunks_to_write` chunks; None for a URL."""
        if "://" in location:
            return None
        return cls(Path(location), store.row_arrays(), chunks_to_write)

    def written(self, chunk: int, images_done: int) -> None:
        """Count chunk `chunk`'s files; raise before the chunks still to come would not fit."""
        self.chunks += 1
        self.remaining -= 1
        self.bytes += sum(_chunk_file_bytes(self.directory, array, chunk) for array in self.arrays)
        if self.remaining <= 0:
            return
        needed = self.bytes / self.chunks * self.remaining * SAFETY_FACTOR + RESERVE_BYTES
        free = shutil.disk_usage(self.directory).free
        if needed > free:
            raise PatchworkError(
                f"{self.directory}: stopped before the disk fills: the {self.remaining} chunks still to extract "
                f"need about {_size(needed)} and the disk has {_size(free)} free. The {images_done} image(s) "
                "extracted in this run are kept: free some space or set storage.features to a larger disk "
                "(extractor.pooling: avg stores 1/49 of a 7x7 map's bytes), then run extract again to go on"
            )


def disk_full_message(location: str) -> str:
    """The error of a chunk write that found the disk full all the same (another process filled it)."""
    return (
        f"{location}: the disk is full; every chunk written before is kept and the one being written was "
        "left as it was: free some space or set storage.features to a larger disk, then run extract again to go on"
    )


def _chunk_file_bytes(directory: Path, array, chunk: int) -> int:
    key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
    try:
        return os.stat(directory / array.basename / key).st_size
    except FileNotFoundError:  # an all-fill chunk zarr did not write
        return 0


def _size(count: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while count >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:.1f} {units[power]}"
