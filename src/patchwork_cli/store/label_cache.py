"""A parsed copy of a big labels.csv, beside it in an Arrow file.

Parsing and checking a million-row labels.csv takes most of a second; commands such as
`sample` read it every time. After a full, validated read of a big table, its parsed
columns are kept in an Arrow file beside it, keyed by labels.csv's inode, size and
modification time, by the classes, and by the copy's own format (CACHE_FORMAT and the table's
fixed columns, label_schema.FIXED_COLUMNS: a patchwork whose table or copy differs never reads an
older copy). labels.csv is only ever replaced whole (a new inode) or edited by hand (a new time),
so a stale copy is never used. Writing it is best effort (a read-only project goes without), and
deleting it is always safe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from patchwork_cli.store.label_schema import FIXED_COLUMNS, KINDS
from patchwork_cli.store.label_table import assemble_table, filepath_column, read_label_table
from patchwork_cli.util.atomic import atomic_write

CACHE_NAME = ".labels.csv.arrow"
CACHE_MIN_ROWS = 100_000
# change it with the copy's layout, a fixed column's kind included (1: the key held no format, before 2026-12)
CACHE_FORMAT = 2


def read_label_table_cached(path: Path, classes: list[str]) -> pd.DataFrame:
    """read_label_table(path, classes), from the parsed copy when it matches the file."""
    path = Path(path)
    cache = path.with_name(CACHE_NAME)
    try:
        key = _cache_key(path, classes)
    except FileNotFoundError:
        return read_label_table(path, classes)  # which says so, naming the file
    try:
        with pa.memory_map(str(cache)) as source:
            stored = pa.ipc.open_file(source).read_all()
        if (stored.schema.metadata or {}).get(b"key") == key:
            return _from_arrow(stored, classes)
    except (OSError, pa.ArrowException):
        pass
    table = read_label_table(path, classes)
    if len(table) >= CACHE_MIN_ROWS:
        _write_cache(cache, table, classes, key)
    return table


def _cache_key(path: Path, classes: list[str]) -> bytes:
    stat = os.stat(path)
    layout = [CACHE_FORMAT, list(FIXED_COLUMNS)]
    return json.dumps([stat.st_ino, stat.st_size, stat.st_mtime_ns, list(classes), layout]).encode()


def _from_arrow(stored: pa.Table, classes: list[str]) -> pd.DataFrame:
    front = {column: _fixed_from_arrow(column, stored.column(column)) for column in FIXED_COLUMNS}
    values = np.empty((stored.num_rows, len(classes)))
    for k, name in enumerate(classes):
        values[:, k] = stored.column(name).to_numpy(zero_copy_only=False)
    values[values < 0] = np.nan
    return assemble_table(front, values, classes)


def _write_cache(cache: Path, table: pd.DataFrame, classes: list[str], key: bytes) -> None:
    columns = {
        **{column: _fixed_to_arrow(column, table[column]) for column in FIXED_COLUMNS},
        # a class cell as one byte: -1 unlabelled, 0, 1 (a tenth of the size of float64)
        **{name: pa.array(np.nan_to_num(table[name].to_numpy(np.float64), nan=-1).astype(np.int8)) for name in classes},
    }
    arrow = pa.table(columns).replace_schema_metadata({"key": key})
    try:
        with atomic_write(cache, mode="wb", encoding=None) as handle:
            with pa.ipc.new_file(handle, arrow.schema) as writer:
                writer.write_table(arrow)
    except (OSError, pa.ArrowException):
        pass  # only a speed-up: a read-only or full disk goes without it


# A fixed column in the copy, by its kind (label_schema.KINDS): path and text as Arrow strings,
# flag as Arrow booleans; read back as the table holds them (label_table).


def _fixed_to_arrow(column: str, values: pd.Series) -> pa.Array:
    kind = KINDS[column]
    if kind == "path":
        return pa.array(values, pa.string())
    if kind == "flag":
        return pa.array(values.to_numpy(bool))
    return pa.array(values.to_numpy(), pa.string())  # text


def _fixed_from_arrow(column: str, stored: pa.ChunkedArray) -> np.ndarray | pd.Series:
    kind = KINDS[column]
    if kind == "path":
        return filepath_column(stored)
    values = stored.to_numpy(zero_copy_only=False)
    return values if kind == "flag" else pd.Series(values, dtype=object, copy=False)  # text: object
