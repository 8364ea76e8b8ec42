"""Which image each row of a row-indexed store is, and where labels.csv's rows are in it.

labels.csv is a table people edit by hand: they sort it, delete rows, paste rows in the
middle, fix a path. Every row-indexed store (features.zarr, a run's predictions and
embeddings) therefore records the filepath of each of its rows, and a digest of that
column. A reader matches the current labels.csv against the record:

- fast path: the first `count` filepaths of labels.csv digest to the record's digest.
  Then store row i is labels.csv row i (rows appended since have no store row yet). The
  digest is one hash over the joined filepaths: about 0.06 s at a million rows.
- otherwise (rows were reordered, deleted, inserted in the middle, or a path was changed):
  every labels.csv row is matched to the store row of the same filepath (as written, else
  the same file written another way, e.g. ./a.jpg for a.jpg); a row whose image the store
  has never seen has no store row. Nothing in the store moves: features are reused where
  they are, and new images are appended to the store.

So no reader ever takes a row's features or predictions for another image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NO_ROW = -1
ROWS_ATTR = "rows"  # the attr holding a store's RowRecord
# Only the coordinating process writes a filepath column (under the project lock), so its chunks
# need not follow the data's: big ones make reading it all (off the fast path) quick.
FILEPATH_CHUNK = 65536


def rows_digest(filepaths: Sequence[str]) -> str:
    """A digest of a filepath column, in order (NUL cannot occur in a path, so the join is unambiguous).
    A label table's column (Arrow strings) is joined in Arrow, a slice at a time: no Python string
    per row, and no copy of the whole column (fresh memory costs more than the hash here)."""
    digest = hashlib.sha256(str(len(filepaths)).encode())
    arrow = getattr(getattr(filepaths, "array", None), "__arrow_array__", None)
    if arrow is None:
        digest.update("\0".join(filepaths).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()
    strings = arrow()
    for start in range(0, len(strings), DIGEST_SLICE):
        if start:
            digest.update(b"\0")
        digest.update(_joined(strings.slice(start, DIGEST_SLICE)))
    return digest.hexdigest()


DIGEST_SLICE = 65536


def _joined(strings) -> memoryview:
    """The UTF-8 bytes of Arrow `strings` joined by NUL, as "\0".join would make them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    strings = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    whole = pa.ListArray.from_arrays(pa.array([0, len(strings)], pa.int32()), strings)
    return memoryview(pc.binary_join(whole, pa.scalar("\0", strings.type))[0].as_buffer())


@dataclass(frozen=True)
class RowRecord:
    """What a store records of its rows: how many, and the digest of their filepaths."""

    count: int
    digest: str

    @classmethod
    def of(cls, filepaths: Sequence[str]) -> RowRecord:
        return cls(len(filepaths), rows_digest(filepaths))

    def as_dict(self) -> dict:
        return {"count": self.count, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict | None) -> RowRecord | None:
        return None if not data else cls(int(data["count"]), str(data["digest"]))


@dataclass(frozen=True)
class RowMatch:
    """Where each row of labels.csv is in a store.

    `source` maps labels.csv row -> store row (NO_ROW: the store has no row for that image);
    None means the fast case, store row i is labels.csv row i for every i < store_rows.
    `first_moved` is the first labels.csv row (0-based) whose image is not at the same row of
    the store, None when none is; `orphans` counts store rows no labels.csv row takes.
    """

    table_rows: int
    store_rows: int
    source: np.ndarray | None = None
    first_moved: int | None = None
    orphans: int = 0

    @property
    def in_order(self) -> bool:
        return self.source is None

    def store_rows_of_table(self) -> np.ndarray:
        """The source mapping, materialised (int64, NO_ROW where there is none)."""
        if self.source is not None:
            return self.source
        source = np.full(self.table_rows, NO_ROW, np.int64)
        present = min(self.table_rows, self.store_rows)
        source[:present] = np.arange(present)
        return source

    def taken(self) -> np.ndarray:
        """(store_rows,) bool: which store rows some labels.csv row takes."""
        taken = np.zeros(self.store_rows, bool)
        source = self.store_rows_of_table()
        taken[source[source != NO_ROW]] = True
        return taken

    def table_rows_of_store(self, store_rows: np.ndarray) -> np.ndarray:
        """The labels.csv row that takes each of `store_rows` (NO_ROW for a row none takes)."""
        source = self.store_rows_of_table()
        inverse = np.full(self.store_rows, NO_ROW, np.int64)
        present = np.flatnonzero(source != NO_ROW)
        inverse[source[present]] = present
        return inverse[np.asarray(store_rows, dtype=np.int64)]

    def gather(self, values: np.ndarray, fill=np.nan) -> np.ndarray:
        """`values` (one entry per store row) in labels.csv order, `fill` where a row has none."""
        if self.source is None and len(values) >= self.table_rows:
            return values[: self.table_rows]
        source = self.store_rows_of_table()
        out = np.full((self.table_rows, *values.shape[1:]), fill, dtype=values.dtype)
        present = source != NO_ROW
        out[present] = values[source[present]]
        return out


def match_rows(
    table_filepaths: Sequence[str],
    record: RowRecord | None,
    store_rows: int,
    read_filepaths: Callable[[], list[str]],
    directory: str | os.PathLike | None = None,
    table_record: RowRecord | None = None,
) -> RowMatch:
    """Match labels.csv's filepaths against a store of `store_rows` rows with `record`.

    `read_filepaths` returns the store's recorded filepaths (called only off the fast path).
    The match's store_rows are the rows with a recorded image.
    A store with no record (written before patchwork recorded one) is taken to be in the
    order of labels.csv, as it was meant to be; `directory` resolves relative paths when
    two spellings of one file are compared. `table_record` is RowRecord.of(table_filepaths) when
    the caller matches several stores against one table (the digest is then taken once).
    """
    table_rows = len(table_filepaths)
    if record is None:
        return RowMatch(table_rows, store_rows)
    count = record.count  # written after the rows it counts: rows past it (a grow cut short) have no image yet
    whole_table = table_record is not None and table_record.count == count
    if (
        count <= table_rows
        and (table_record.digest if whole_table else rows_digest(table_filepaths[:count])) == record.digest
    ):
        return RowMatch(table_rows, count)
    table_filepaths = list(table_filepaths)  # a Series' [] is by label: off the fast path, by position
    stored = list(read_filepaths())[:count]
    row_of = {path: row for row, path in enumerate(stored)}
    source = np.fromiter((row_of.get(path, NO_ROW) for path in table_filepaths), np.int64, table_rows)
    unmatched = np.flatnonzero(source == NO_ROW)
    if len(unmatched):  # the same file written another way (./a.jpg, a/../a.jpg) is the same image
        row_of_location = {_location(path, directory): row for row, path in enumerate(stored)}
        taken = set(source[source != NO_ROW].tolist())
        for row in unmatched:
            found = row_of_location.get(_location(table_filepaths[row], directory), NO_ROW)
            if found != NO_ROW and found not in taken:
                source[row] = found
                taken.add(found)
    moved = np.flatnonzero(source != np.arange(table_rows))
    orphans = count - int((source != NO_ROW).sum())
    if not len(moved):  # only rows at the end were deleted: the rest is still in order
        return RowMatch(table_rows, count, orphans=orphans)
    return RowMatch(table_rows, count, source=source, first_moved=int(moved[0]), orphans=orphans)


def _prefix_digest(table_filepaths: Sequence[str], count: int, table_record: RowRecord | None) -> str:
    if table_record is not None and table_record.count == count:
        return table_record.digest
    return rows_digest(table_filepaths[:count])


def _location(path: str, directory) -> str:
    return os.path.normpath(os.path.join(directory, path) if directory is not None else path)
