"""Import CSVs: a table of label edits (`patchwork label --import`, Project.import_labels), parsed and checked whole.

The CSV has a filepath column and any of the class columns, exclude, validation and
subset, as in labels.csv; an empty cell leaves that value as it is. Every cell is
checked before anything is returned, so a bad file changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError, did_you_mean
from patchwork_cli.store.label_schema import (
    EDITABLE_COLUMNS,
    FALSE_CELLS,
    FILEPATH,
    FLAG_COLUMNS,
    TEXT_COLUMNS,
    TRUE_CELLS,
)
from patchwork_cli.store.label_table import check_one_class, line_of, raise_at_first, read_csv, read_header


def read_label_edits(path: Path, classes: list[str], exclusive: bool = False) -> list[tuple[int, str, dict]]:
    """Parse an import CSV into (line, filepath, fields) edits.

    The CSV has a filepath column and any of the class columns, exclude, validation
    and subset; an empty cell leaves that value as it is. Every cell is checked before
    anything is returned, so a bad file changes nothing; `exclusive` (multiclass) also
    refuses a row with two 1s.
    """
    path = Path(path)
    header = read_header(path)
    allowed = [*classes, *EDITABLE_COLUMNS]
    for column in header:
        if column != FILEPATH and column not in allowed:
            raise PatchworkError(
                f"{path}, line 1: unknown column {column!r}{did_you_mean(column, allowed)}; "
                f"expected {FILEPATH} and any of: {', '.join(allowed)}"
            )
    raw = read_csv(path, dtype=object)
    raw.columns = header
    filepaths = raw[FILEPATH].str.strip()
    raise_at_first(path, (filepaths == "").to_numpy(), lambda row: ": empty filepath")
    columns = {}
    for column in header:
        cells = raw[column].str.strip()
        if column in classes:
            values = cells.map({"": None, "0": 0, "1": 1, "0.0": 0, "1.0": 1})
            expected = "empty, 0 or 1"
        elif column in FLAG_COLUMNS:
            lowered = cells.str.lower()
            values = lowered.map(dict.fromkeys(TRUE_CELLS, True) | dict.fromkeys(FALSE_CELLS[:-1], False) | {"": None})
            expected = "empty, True or False"
        elif column in TEXT_COLUMNS:
            values = raw[column].where(cells != "", None)
            expected = ""
        else:
            continue
        bad = values.isna().to_numpy() & (cells != "").to_numpy()
        raise_at_first(
            path,
            bad,
            lambda row, column=column, expected=expected: (
                f", column {column!r}: expected {expected}, got {raw[column].iloc[row]!r}"
            ),
        )
        columns[column] = values.astype(object).where(values.notna(), None).tolist()
    given = [name for name in classes if name in columns]
    if exclusive and len(given) > 1:
        check_one_class(np.column_stack([np.array(columns[name], object) == 1 for name in given]), given, str(path))
    edits = []
    for row, filepath in enumerate(filepaths.tolist()):
        fields = {column: values[row] for column, values in columns.items() if values[row] is not None}
        if fields:
            edits.append((line_of(row), filepath, fields))
    return edits
