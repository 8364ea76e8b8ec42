"""labels.csv, the label table: its format, how it is read and checked, how it is written.

labels.csv is the table in the original patchwork format (its fixed columns, named and
described in store/label_schema.py, then one column per class holding empty / 0 / 1), so that
the original library's users can bring their tables and read them back. Errors name the file,
the line and the column; row 0 of the table is line 2 of the file, below the header (line_of and
raise_at_first hold that rule).

In memory the table is a pandas DataFrame: the fixed columns as their kinds hold them (filepath
str, exclude and validation bool, subset str with "" for none) and one float column per class
(NaN = unlabelled), which is what users of the original library hold in their notebooks.

The rules for one label field (check_field) and for a multiclass row (one 1 at most:
exclusive_fields, check_one_class) live here too, for every writer of labels: the
journal, imports and a labels.csv edited by hand.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.label_schema import (
    EDITABLE_COLUMNS,
    FALSE_CELLS,
    FILEPATH,
    FIXED_COLUMNS,
    FLAG_COLUMNS,
    KINDS,
    TEXT_COLUMNS,
    TRUE_CELLS,
)
from patchwork_cli.util.atomic import atomic_write

LABELS_NAME = "labels.csv"


def line_of(row: int) -> int:
    """The line of a table file that holds row `row`: row 0 is line 2, below the header."""
    return row + 2


def raise_at_first(source: object, bad: np.ndarray, message: Callable[[int], str]) -> None:
    """Refuse the first row flagged in `bad` (one bool per row), naming `source` and its line:
    the error reads f"{source}, line N" followed by message(row). (`message` is called at once,
    so a lambda in a loop binds the loop's variables as defaults only to satisfy the linter.)"""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PatchworkError(f"{source}, line {line_of(row)}{message(row)}")


def empty_table(classes: list[str], filepaths: Iterable[str] = ()) -> pd.DataFrame:
    """A label table of unlabelled rows for `filepaths`."""
    filepaths = list(filepaths)
    n = len(filepaths)
    data = {FILEPATH: filepath_column(filepaths), **{column: _absent(column, n) for column in EDITABLE_COLUMNS}}
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
    header = read_header(path)
    table_classes = [column for column in header if column not in FIXED_COLUMNS]
    if classes is None:
        classes = table_classes
    else:
        unknown = [c for c in table_classes if c not in classes]
        if unknown:
            raise PatchworkError(
                f"{path}: column {unknown[0]!r} is not a class (classes: {', '.join(classes)}; "
                f"other columns allowed: {', '.join(FIXED_COLUMNS)})"
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
            # names=header: the header as read_header cleaned it (" a" is column "a")
            raw = read_csv(path, names=header, header=0, dtype=dtypes, na_values={c: [""] for c in table_classes})
        except ValueError:  # a class cell that is not a number
            _raise_bad_class_cell(path, table_classes)
            raise  # pragma: no cover - _raise_bad_class_cell always raises for conversion errors

    filepaths = raw[FILEPATH] if fast else filepath_column(raw[FILEPATH].to_numpy(dtype=object))
    if not fast:
        _check_filepaths(path, filepaths)
    rows = len(filepaths)
    front = {FILEPATH: filepaths}
    for column in EDITABLE_COLUMNS:
        front[column] = _parse_cells(path, column, raw[column]) if column in raw else _absent(column, rows)
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
            raise_at_first(
                path,
                bad,
                lambda row, name=name, column=column: f", column {name!r}: expected empty, 0 or 1, got {column[row]:g}",
            )
            values[:, k] = column
    return assemble_table(front, values, classes)


def filepath_column(values) -> pd.Series:
    """The filepath column in the dtype every table holds it in: pandas' Arrow-backed `str`. Built
    from Arrow strings it is a view of them (no Python string per row: 0.1-0.4 s at a million
    rows), and its digest is taken in Arrow (rowindex.rows_digest)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.to_pandas(types_mapper=_as_str_dtype)
    return pd.Series(values, dtype=FILEPATH_DTYPE)


FILEPATH_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3's `str`


def _as_str_dtype(arrow_type: pa.DataType):
    return FILEPATH_DTYPE if arrow_type in (pa.string(), pa.large_string()) else None


def assemble_table(front: dict, values: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The table from its front columns (the fixed ones, in order) and its (N, C) class block: one
    layout for every reader."""
    return pd.concat([pd.DataFrame(front), pd.DataFrame(values, columns=list(classes), copy=False)], axis=1)


def write_label_table(table: pd.DataFrame, path: Path, classes: list[str]) -> None:
    """Atomically write `table` in the documented format (class cells as empty / 0 / 1)."""
    out = table[list(FIXED_COLUMNS)].copy()
    for name in classes:
        out[name] = table[name].astype("Int8")
    with atomic_write(Path(path), newline="") as handle:
        out.to_csv(handle, index=False, lineterminator="\n")


def read_header(path: Path) -> list[str]:
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
        raise PatchworkError(f"{path}: empty file; expected a header line with a {FILEPATH!r} column")
    header = [column.strip() for column in header]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise PatchworkError(f"{path}, line 1: column {duplicated[0]!r} appears more than once")
    if FILEPATH not in header:
        raise PatchworkError(f"{path}, line 1: no {FILEPATH!r} column (columns: {', '.join(header)})")
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
    types[FILEPATH] = pa.string()
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
    filepaths = arrow.column(FILEPATH)
    if pc.count_distinct(filepaths).as_py() != len(filepaths) or (
        len(filepaths) and pc.min(pc.utf8_length(filepaths)).as_py() == 0
    ):
        return None  # a duplicated or empty filepath: the careful reader names its lines
    columns = {}
    for column in header:
        values = arrow.column(column).combine_chunks()
        if column in class_columns:
            columns[column] = pd.Series(values.to_numpy(zero_copy_only=False), dtype=np.float64, copy=False)
        elif column == FILEPATH:
            columns[column] = filepath_column(values)
        else:
            categories = pd.Index(values.dictionary.to_pylist(), dtype=object)
            columns[column] = pd.Series(pd.Categorical.from_codes(values.indices.to_numpy(), categories))
    return columns


def read_csv(path: Path, **options) -> pd.DataFrame:
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
        bad = (numeric.isna() & (cells != "")).to_numpy()
        raise_at_first(
            path, bad, lambda row, name=name: f", column {name!r}: expected empty, 0 or 1, got {raw[name].iloc[row]!r}"
        )
    raise PatchworkError(f"{path}: a class column holds a value that is not empty, 0 or 1")


def _check_filepaths(path: Path, filepaths: pd.Series) -> None:
    raise_at_first(path, (filepaths == "").to_numpy(), lambda row: ": empty filepath")

    def already(row: int) -> str:
        first = int(np.flatnonzero((filepaths == filepaths.iloc[row]).to_numpy())[0])
        return f": filepath {filepaths.iloc[row]!r} already appears on line {line_of(first)}"

    raise_at_first(path, filepaths.duplicated().to_numpy(), already)


def _absent(column: str, rows: int) -> np.ndarray | pd.Series:
    """A fixed column that a table lacks (or new rows), as its kind holds it: all False, or all ""."""
    if KINDS[column] == "flag":
        return np.zeros(rows, dtype=bool)
    return pd.Series(np.full(rows, "", dtype=object), dtype=object, copy=False)  # text


def _parse_cells(path: Path, column: str, cells: pd.Series) -> np.ndarray | pd.Series:
    """A fixed column other than filepath, from its cells as read, as its kind holds it."""
    if KINDS[column] == "flag":
        return _parse_flags(path, column, cells)
    return cells.astype(object)  # text: as written


def _parse_flags(path: Path, column: str, cells: pd.Series) -> np.ndarray:
    # Exact spellings first (hash lookups: fast at a million rows); only when some cell
    # is unusual does the per-cell normalisation run.
    true = cells.isin(("True", "TRUE", *TRUE_CELLS)).to_numpy()
    bad = ~(true | cells.isin(("False", "FALSE", *FALSE_CELLS)).to_numpy())
    if bad.any():
        lowered = cells.str.strip().str.lower()
        true = lowered.isin(TRUE_CELLS).to_numpy()
        bad = ~(true | lowered.isin(FALSE_CELLS).to_numpy())
    raise_at_first(path, bad, lambda row: f", column {column!r}: expected True or False, got {cells.iloc[row]!r}")
    return true


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1]


def check_field(key: str, value: object, classes: list[str]) -> object:
    """Validate one label field: a class takes 1, 0 or None (back to unlabelled); a flag column
    (exclude, validation) takes a boolean; a text column (subset) takes text or None."""
    if key in classes:
        if value is not None and (isinstance(value, (bool, np.bool_)) or value not in (0, 1)):
            raise PatchworkError(f"{key}: expected 0, 1 or None, got {value!r}")
        return None if value is None else int(value)
    if key in FLAG_COLUMNS:
        if not isinstance(value, (bool, np.bool_)):
            raise PatchworkError(f"{key}: expected True or False, got {value!r}")
        return bool(value)
    if key in TEXT_COLUMNS:
        if value is not None and not isinstance(value, str):
            raise PatchworkError(f"{key}: expected text or None, got {value!r}")
        return value or None
    raise PatchworkError(f"unknown label field {key!r} (classes: {', '.join(classes)})")


def exclusive_fields(filepath: str, checked: dict, classes: list[str]) -> dict:
    """The checked fields of one multiclass edit: a class set to 1 sets every other class
    to 0; two 1s, or a 1 beside another class set back to unlabelled, are refused."""
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
    `source` and the line."""
    raise_at_first(
        source, ones.sum(axis=1) > 1, lambda row: f": {_both([classes[k] for k in np.flatnonzero(ones[row])])}"
    )
