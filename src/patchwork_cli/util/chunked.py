"""Reading some rows of a row-chunked array (zarr) a chunk at a time.

`array[rows]` on a zarr array reads every chunk that holds one of the rows, but first gathers
them into one selection; reading chunk by chunk keeps memory at the rows asked for plus one chunk,
and lets a caller fill in, chunk by chunk, what the array does not hold yet.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def chunk_groups(rows: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(chunk index, positions in `rows`, offsets within the chunk) for each chunk that holds some
    of `rows` (non-negative row numbers, in any order), in chunk order."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    chunks = rows[order] // chunk_rows
    bounds = np.flatnonzero(np.diff(chunks, prepend=-1, append=-1))
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        chunk = int(chunks[first])
        positions = order[first:last]
        yield chunk, positions, rows[positions] - chunk * chunk_rows


def gather_rows(array, rows: np.ndarray) -> np.ndarray:
    """(len(rows), width) float32: rows of the 2-d `array` (chunked along rows); a negative row, or one
    past the array's end, gives NaN."""
    rows = np.asarray(rows, dtype=np.int64)
    chunk_rows, width = array.chunks[0], array.shape[1]
    out = np.full((len(rows), width), np.nan, np.float32)
    present = np.flatnonzero((rows >= 0) & (rows < array.shape[0]))
    for chunk, positions, offsets in chunk_groups(rows[present], chunk_rows):
        start = chunk * chunk_rows
        values = np.asarray(array[start : min(start + chunk_rows, array.shape[0])], dtype=np.float32)[offsets]
        out[present[positions]] = values
    return out
