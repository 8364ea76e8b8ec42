"""The label store: labels.csv plus labels.journal, as DESIGN.md describes.

labels.csv is the table in the original patchwork format (filepath, exclude,
validation, subset, one column per class holding empty / 0 / 1). labels.journal is an
append-only log of edits, one JSON object per line, durable once written and
fsynced. Every reader sees the table with the journal replayed on top; compaction
folds the journal into a new labels.csv (temp file + os.replace) and then truncates
the journal. Replay is idempotent, so a crash between those two steps loses nothing.

In memory the table is a pandas DataFrame: filepath (str), exclude and validation
(bool), subset (str, "" for none) and one float column per class (NaN = unlabelled),
which is what users of the original library hold in their notebooks.
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from patchwork_cli.errors import PatchworkError, did_you_mean
from patchwork_cli.store.config import RESERVED_COLUMNS
from patchwork_cli.util.atomic import atomic_write
from patchwork_cli.util.locking import project_lock

log = logging.getLogger("patchwork")

LABELS_NAME = "labels.csv"
JOURNAL_NAME = "labels.journal"
FLAG_COLUMNS = ("exclude", "validation")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


# --- the table ---------------------------------------------------------------------


def empty_table(classes: list[str], filepaths: Iterable[str] = ()) -> pd.DataFrame:
    """A label table of unlabelled rows for `filepaths`."""
    filepaths = list(filepaths)
    n = len(filepaths)
    data = {
        "filepath": pd.Series(filepaths, dtype=object),
        "exclude": np.zeros(n, dtype=bool),
        "validation": np.zeros(n, dtype=bool),
        "subset": pd.Series([""] * n, dtype=object),
    }
    data.update({name: np.full(n, np.nan) for name in classes})
    return pd.DataFrame(data)


def read_label_table(path: Path, classes: list[str] | None = None, allow_missing_classes: bool = False) -> pd.DataFrame:
    """Read and validate a label table in the original patchwork format.

    `classes` None takes the classes from the header (every non-reserved column).
    Otherwise the header's class columns must be exactly `classes` (or a subset of
    them with `allow_missing_classes`, missing ones coming back unlabelled).
    Errors name the file, the line and the column.
    """
    path = Path(path)
    header = _read_header(path)
    table_classes = [column for column in header if column not in RESERVED_COLUMNS]
    if classes is None:
        classes = table_classes
    else:
        unknown = [c for c in table_classes if c not in classes]
        if unknown:
            raise PatchworkError(
                f"{path}: column {unknown[0]!r} is not a class (classes: {', '.join(classes)}; "
                f"other columns allowed: {', '.join(RESERVED_COLUMNS)})"
            )
        missing = [c for c in classes if c not in table_classes]
        if missing and not allow_missing_classes:
            raise PatchworkError(f"{path}: class column {missing[0]!r} is missing")
    raw = _read_well_formed(path, header, table_classes)
    fast = raw is not None  # Arrow has read it, and checked its filepaths are unique and not empty
    if raw is None:  # the careful reader finds and names the problem (or reads what Arrow would not)
        # object, not str: pandas' python-backed string dtype makes every later check a Python loop
        dtypes = {column: object for column in header}
        dtypes.update({name: "float64" for name in table_classes})
        try:
            # names=header: the header as _read_header cleaned it (" a" is column "a")
            raw = _read_csv(path, names=header, header=0, dtype=dtypes, na_values={c: [""] for c in table_classes})
        except ValueError:  # a class cell that is not a number
            _raise_bad_class_cell(path, table_classes)
            raise  # pragma: no cover - _raise_bad_class_cell always raises for conversion errors

    filepaths = pd.Series(raw["filepath"].to_numpy(dtype=object), dtype=object, copy=False)
    if not fast:
        _check_filepaths(path, filepaths)
    rows = len(filepaths)
    front = {"filepath": filepaths}
    for column in FLAG_COLUMNS:
        front[column] = _parse_flags(path, column, raw[column]) if column in raw else np.zeros(rows, dtype=bool)
    front["subset"] = raw["subset"].astype(object) if "subset" in raw else np.full(rows, "", dtype=object)
    # The class columns are filled into one (N, C) block: no per-column copies, and
    # table[classes].to_numpy() is then free.
    # (np.empty when every class has a column: filling first would touch 80 MB twice at 1M rows)
    values = (
        np.empty((rows, len(classes)))
        if all(name in raw for name in classes)
        else np.full((rows, len(classes)), np.nan)
    )
    for k, name in enumerate(classes):
        if name in raw:
            column = raw[name].to_numpy(dtype=np.float64)
            bad = ~(np.isnan(column) | (column == 0) | (column == 1))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise PatchworkError(
                    f"{path}, line {row + 2}, column {name!r}: expected empty, 0 or 1, got {column[row]:g}"
                )
            values[:, k] = column
    return _assemble(front, values, classes)


def _assemble(front: dict, values: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The table from its front columns (filepath, exclude, validation, subset) and its
    (N, C) class block: one layout for every reader."""
    return pd.concat([pd.DataFrame(front), pd.DataFrame(values, columns=list(classes), copy=False)], axis=1)


# --- a parsed copy of a big labels.csv -------------------------------------------------
# Parsing and checking a million-row labels.csv takes most of a second; commands such as
# `sample` read it every time. After a full, validated read of a big table, its parsed
# columns are kept in an Arrow file beside it, keyed by labels.csv's inode, size and
# modification time and by the classes. labels.csv is only ever replaced whole (a new
# inode) or edited by hand (a new time), so a stale copy is never used. Writing it is
# best effort (a read-only project goes without), and deleting it is always safe.

CACHE_NAME = ".labels.csv.arrow"
CACHE_MIN_ROWS = 100_000


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
    return json.dumps([stat.st_ino, stat.st_size, stat.st_mtime_ns, list(classes)]).encode()


def _from_arrow(stored: pa.Table, classes: list[str]) -> pd.DataFrame:
    front = {
        "filepath": pd.Series(stored.column("filepath").to_numpy(zero_copy_only=False), dtype=object, copy=False),
        "exclude": stored.column("exclude").to_numpy(zero_copy_only=False),
        "validation": stored.column("validation").to_numpy(zero_copy_only=False),
        "subset": pd.Series(stored.column("subset").to_numpy(zero_copy_only=False), dtype=object, copy=False),
    }
    values = np.empty((stored.num_rows, len(classes)))
    for k, name in enumerate(classes):
        values[:, k] = stored.column(name).to_numpy(zero_copy_only=False)
    values[values < 0] = np.nan
    return _assemble(front, values, classes)


def _write_cache(cache: Path, table: pd.DataFrame, classes: list[str], key: bytes) -> None:
    columns = {
        "filepath": pa.array(table["filepath"].to_numpy(), pa.string()),
        "exclude": pa.array(table["exclude"].to_numpy(bool)),
        "validation": pa.array(table["validation"].to_numpy(bool)),
        "subset": pa.array(table["subset"].to_numpy(), pa.string()),
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


def write_label_table(table: pd.DataFrame, path: Path, classes: list[str]) -> None:
    """Atomically write `table` in the documented format (class cells as empty / 0 / 1)."""
    out = table[["filepath", *FLAG_COLUMNS, "subset"]].copy()
    for name in classes:
        out[name] = table[name].astype("Int8")
    with atomic_write(Path(path), newline="") as handle:
        out.to_csv(handle, index=False, lineterminator="\n")


def _read_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except FileNotFoundError:
        raise PatchworkError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise PatchworkError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise PatchworkError(f"{path}, line 1: malformed CSV header: {error}") from None
    if not header:
        raise PatchworkError(f"{path}: empty file; expected a header line with a 'filepath' column")
    header = [column.strip() for column in header]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise PatchworkError(f"{path}, line 1: column {duplicated[0]!r} appears more than once")
    if "filepath" not in header:
        raise PatchworkError(f"{path}, line 1: no 'filepath' column (columns: {', '.join(header)})")
    if "" in header:
        raise PatchworkError(f"{path}, line 1: a column has an empty name")
    return header


def _read_well_formed(path: Path, header: list[str], class_columns: list[str]) -> dict[str, pd.Series] | None:
    """The columns of the table, read by Arrow's CSV parser (several times faster than
    pandas' at a million rows): filepath as object text, classes as floats (NaN for empty
    cells), the other columns as categoricals (a few distinct values each).
    None when Arrow stops at anything (a malformed row, a class cell that is not a number,
    bytes that are not UTF-8): the careful reader then says exactly what and where."""
    text = pa.dictionary(pa.int32(), pa.string())
    types = {column: pa.float64() if column in class_columns else text for column in header}
    types["filepath"] = pa.string()
    try:
        arrow = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1, use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except pa.ArrowException:
        return None
    filepaths = arrow.column("filepath")
    if pc.count_distinct(filepaths).as_py() != len(filepaths) or (
        len(filepaths) and pc.min(pc.utf8_length(filepaths)).as_py() == 0
    ):
        return None  # a duplicated or empty filepath: the careful reader names its lines
    columns = {}
    for column in header:
        values = arrow.column(column).combine_chunks()
        if column in class_columns:
            columns[column] = pd.Series(values.to_numpy(zero_copy_only=False), dtype=np.float64, copy=False)
        elif column == "filepath":
            columns[column] = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object, copy=False)
        else:
            categories = pd.Index(values.dictionary.to_pylist(), dtype=object)
            columns[column] = pd.Series(pd.Categorical.from_codes(values.indices.to_numpy(), categories))
    return columns


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """pandas.read_csv with the checks pandas leaves out: a row with more cells than the
    header is an error, not a silent shift into an index; every error names the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                keep_default_na=False,
                index_col=False,
                encoding="utf-8-sig",
                engine="c",
                low_memory=False,
                **options,
            )
    except pd.errors.ParserWarning:
        raise PatchworkError(f"{path}: malformed CSV: a row has more cells than the header") from None
    except pd.errors.ParserError as error:
        raise PatchworkError(f"{path}: malformed CSV: {_first_line(error)}") from None


def _raise_bad_class_cell(path: Path, class_columns: list[str]) -> None:
    """Find and report the first class cell that is not a number (the slow path)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=class_columns, encoding="utf-8-sig")
    for name in class_columns:
        cells = raw[name].str.strip()
        numeric = pd.to_numeric(cells, errors="coerce")
        bad = numeric.isna() & (cells != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PatchworkError(
                f"{path}, line {row + 2}, column {name!r}: expected empty, 0 or 1, got {raw[name].iloc[row]!r}"
            )
    raise PatchworkError(f"{path}: a class column holds a value that is not empty, 0 or 1")


def _check_filepaths(path: Path, filepaths: pd.Series) -> None:
    empty = (filepaths == "").to_numpy()
    if empty.any():
        raise PatchworkError(f"{path}, line {int(np.flatnonzero(empty)[0]) + 2}: empty filepath")
    duplicated = filepaths.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero((filepaths == filepaths.iloc[row]).to_numpy())[0])
        raise PatchworkError(
            f"{path}, line {row + 2}: filepath {filepaths.iloc[row]!r} already appears on line {first + 2}"
        )


def _parse_flags(path: Path, column: str, cells: pd.Series) -> np.ndarray:
    # Exact spellings first (hash lookups: fast at a million rows); only when some cell
    # is unusual does the per-cell normalisation run.
    true = cells.isin(("True", "TRUE", *_TRUE)).to_numpy()
    bad = ~(true | cells.isin(("False", "FALSE", *_FALSE)).to_numpy())
    if bad.any():
        lowered = cells.str.strip().str.lower()
        true = lowered.isin(_TRUE).to_numpy()
        bad = ~(true | lowered.isin(_FALSE).to_numpy())
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PatchworkError(
            f"{path}, line {row + 2}, column {column!r}: expected True or False, got {cells.iloc[row]!r}"
        )
    return true


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1]


# --- edits and the journal -----------------------------------------------------------


def check_field(key: str, value: object, classes: list[str]) -> object:
    """Validate one label field: a class takes 1, 0 or None (back to unlabelled);
    exclude and validation take booleans; subset takes text or None."""
    if key in classes:
        if value is not None and (isinstance(value, (bool, np.bool_)) or value not in (0, 1)):
            raise PatchworkError(f"{key}: expected 0, 1 or None, got {value!r}")
        return None if value is None else int(value)
    if key in FLAG_COLUMNS:
        if not isinstance(value, (bool, np.bool_)):
            raise PatchworkError(f"{key}: expected True or False, got {value!r}")
        return bool(value)
    if key == "subset":
        if value is not None and not isinstance(value, str):
            raise PatchworkError(f"subset: expected text or None, got {value!r}")
        return value or None
    raise PatchworkError(f"unknown label field {key!r} (classes: {', '.join(classes)})")


def make_edit(
    filepath: str,
    fields: Mapping[str, object],
    classes: list[str],
    seconds: float | None = None,
    exclusive: bool = False,
) -> dict:
    """Validate one edit and return its journal record.

    `exclusive` (a multiclass project): a class set to 1 sets every other class to 0 in
    the same record, so that the journal alone says what the image is; two 1s, or a 1
    beside another class set back to unlabelled, are refused.
    """
    checked = {}
    for key, value in fields.items():
        try:
            checked[key] = check_field(key, value, classes)
        except PatchworkError as error:
            raise PatchworkError(f"{filepath}: {error}") from None
    if exclusive:
        checked = _exclusive(filepath, checked, classes)
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "filepath": filepath,
        "set": checked,
        "seconds": None if seconds is None else round(float(seconds), 3),
    }


def _exclusive(filepath: str, checked: dict, classes: list[str]) -> dict:
    positive = [name for name in classes if checked.get(name) == 1]
    if not positive:
        return checked
    if len(positive) > 1:
        raise PatchworkError(f"{filepath}: {_both(positive)}")
    unset = [name for name in classes if name in checked and checked[name] is None]
    if unset:
        raise PatchworkError(
            f"{filepath}: {positive[0]}=1 sets the other classes to 0 in a multiclass project; "
            f"{unset[0]!r} cannot be set to unlabelled in the same edit"
        )
    return {**checked, **{name: 0 for name in classes if name != positive[0]}}


def _both(positive: list[str]) -> str:
    return f"columns {positive[0]!r} and {positive[1]!r} are both 1; a multiclass project takes one class per image"


def check_one_class(ones: np.ndarray, classes: list[str], source: str) -> None:
    """Refuse a row of `ones` ((rows, C) bool, the cells that are 1) with two 1s, naming
    `source` and the line (row 0 is line 2, below the header)."""
    doubled = np.flatnonzero(ones.sum(axis=1) > 1)
    if len(doubled):
        row = int(doubled[0])
        positive = [classes[k] for k in np.flatnonzero(ones[row])]
        raise PatchworkError(f"{source}, line {row + 2}: {_both(positive)}")


def read_label_edits(path: Path, classes: list[str], exclusive: bool = False) -> list[tuple[int, str, dict]]:
    """Parse an import CSV into (line, filepath, fields) edits.

    The CSV has a filepath column and any of the class columns, exclude, validation
    and subset; an empty cell leaves that value as it is. Every cell is checked before
    anything is returned, so a bad file changes nothing; `exclusive` (multiclass) also
    refuses a row with two 1s.
    """
    path = Path(path)
    header = _read_header(path)
    allowed = [*classes, *FLAG_COLUMNS, "subset"]
    for column in header:
        if column != "filepath" and column not in allowed:
            raise PatchworkError(
                f"{path}, line 1: unknown column {column!r}{did_you_mean(column, allowed)}; "
                f"expected filepath and any of: {', '.join(allowed)}"
            )
    raw = _read_csv(path, dtype=object)
    raw.columns = header
    filepaths = raw["filepath"].str.strip()
    empty = (filepaths == "").to_numpy()
    if empty.any():
        raise PatchworkError(f"{path}, line {int(np.flatnonzero(empty)[0]) + 2}: empty filepath")
    columns = {}
    for column in header:
        cells = raw[column].str.strip()
        if column in classes:
            values = cells.map({"": None, "0": 0, "1": 1, "0.0": 0, "1.0": 1})
            expected = "empty, 0 or 1"
        elif column in FLAG_COLUMNS:
            lowered = cells.str.lower()
            values = lowered.map(dict.fromkeys(_TRUE, True) | dict.fromkeys(_FALSE[:-1], False) | {"": None})
            expected = "empty, True or False"
        elif column == "subset":
            values = raw[column].where(cells != "", None)
            expected = ""
        else:
            continue
        bad = values.isna().to_numpy() & (cells != "").to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PatchworkError(
                f"{path}, line {row + 2}, column {column!r}: expected {expected}, got {raw[column].iloc[row]!r}"
            )
        columns[column] = values.astype(object).where(values.notna(), None).tolist()
    given = [name for name in classes if name in columns]
    if exclusive and len(given) > 1:
        check_one_class(np.column_stack([np.array(columns[name], object) == 1 for name in given]), given, str(path))
    edits = []
    for row, filepath in enumerate(filepaths.tolist()):
        fields = {column: values[row] for column, values in columns.items() if values[row] is not None}
        if fields:
            edits.append((row + 2, filepath, fields))
    return edits


class Journal:
    """labels.journal: append-only JSON lines, each durable once fsynced."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, records: list[dict]) -> None:
        """Append `records` in one write and fsync; they are durable when this returns."""
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # Appenders take turns (the lock is on the journal itself), so the check
            # below never sees another writer's line half-way through.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            # A writer that died mid-line left no newline: start ours on a fresh line.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as error:
                # A full disk must not leave part of the batch behind: cut the journal back
                # to where it was, so a refused edit (or import) changes nothing.
                os.ftruncate(fd, size)
                raise OSError(error.errno, error.strerror, str(self.path)) from None
        finally:
            os.close(fd)

    def read(self) -> list[dict]:
        """Every well-formed record in order; torn or foreign lines are skipped with a warning."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        lines = data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not (
                    isinstance(record, dict)
                    and isinstance(record.get("filepath"), str)
                    and isinstance(record.get("set"), dict)
                ):
                    raise ValueError("not an edit record")
            except ValueError:
                torn = number == len(lines)  # the last line has no newline: a write was cut short
                log.warning(
                    "%s: line %d %s; ignored",
                    self.path.name,
                    number,
                    "is incomplete (an interrupted write)" if torn else "is not a valid edit record",
                )
                continue
            records.append(record)
        return records

    def replace(self, records: list[dict]) -> None:
        """Make `records` the whole journal (atomically; empty truncates). The caller holds the
        exclusive project lock, so no appender holds the old file."""
        if not records:
            self.truncate()
            return
        with atomic_write(self.path) as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)

    def truncate(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)


def apply_edits(table: pd.DataFrame, records: list[dict], classes: list[str]) -> pd.DataFrame:
    """Replay journal `records` on `table` in order (last write wins); returns a new table."""
    if not records:
        return table
    table = table.copy(deep=False)  # every changed column is replaced by a new array below
    rows = pd.Index(table["filepath"]).get_indexer([r["filepath"] for r in records])
    updates: dict[str, dict[int, object]] = {}
    skipped = 0
    for record, row in zip(records, rows, strict=True):
        if row < 0:
            skipped += 1
            continue
        for key, value in record["set"].items():
            try:
                updates.setdefault(key, {})[int(row)] = check_field(key, value, classes)
            except PatchworkError as error:
                log.warning("labels.journal: %s: %s; ignored", record["filepath"], error)
    if skipped:
        log.warning(
            "labels.journal: %d edit(s) name a filepath that is not in labels.csv (changed or deleted by hand?); "
            "they are kept in the journal, and apply again if that filepath comes back",
            skipped,
        )
    for key, by_row in updates.items():
        index = np.fromiter(by_row.keys(), dtype=np.int64, count=len(by_row))
        column = table[key].to_numpy(copy=True)
        if key in classes:
            column[index] = [np.nan if v is None else v for v in by_row.values()]
        elif key == "subset":
            column[index] = [v or "" for v in by_row.values()]
        else:
            column[index] = list(by_row.values())
        table[key] = column
    return table


# --- the store ---------------------------------------------------------------------------


class LabelStore:
    """labels.csv + labels.journal of one project directory, guarded by the project lock."""

    def __init__(self, directory: Path, classes: list[str], exclusive: bool = False):
        self.directory = Path(directory)
        self.classes = list(classes)
        self.exclusive = exclusive  # multiclass: labels.csv may hold one 1 per row
        self.csv_path = self.directory / LABELS_NAME
        self.journal = Journal(self.directory / JOURNAL_NAME)

    def read(self) -> pd.DataFrame:
        """The label table with the journal replayed on top."""
        with project_lock(self.directory, exclusive=False):
            return self.load_unlocked()

    def edit(self, records: list[dict]) -> None:
        """Append validated edit records (see make_edit) to the journal, durably."""
        with project_lock(self.directory, exclusive=False):
            self.journal.append(records)

    def compact(self) -> pd.DataFrame:
        """Fold the journal into labels.csv; returns the resulting table."""
        with project_lock(self.directory, exclusive=True):
            records = self.journal.read()
            table = apply_edits(read_label_table_cached(self.csv_path, self.classes), records, self.classes)
            if records:
                self.replace_unlocked(table)
            return table

    # The two halves of every rewrite; the caller holds the exclusive project lock.

    def load_unlocked(self) -> pd.DataFrame:
        table = read_label_table_cached(self.csv_path, self.classes)
        if self.exclusive:  # a labels.csv edited by hand is refused before anything builds on it
            check_one_class(table[self.classes].to_numpy() == 1, self.classes, str(self.csv_path))
        return apply_edits(table, self.journal.read(), self.classes)

    def replace_unlocked(self, table: pd.DataFrame, classes: list[str] | None = None) -> None:
        """Write `table` as the new labels.csv, then empty the (now folded) journal, keeping only
        the edits of filepaths `table` lacks: a person's label is never dropped because its row's
        path was changed by hand while the edit waited to be folded in."""
        records = self.journal.read()
        known = pd.Index(table["filepath"]) if records else None
        waiting = [record for record in records if record["filepath"] not in known]
        write_label_table(table, self.csv_path, self.classes if classes is None else classes)
        self.journal.replace(waiting)
