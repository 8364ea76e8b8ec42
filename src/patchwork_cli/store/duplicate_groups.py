"""duplicates.csv: the groups of copies `patchwork duplicates` found, one line per member.

Columns: group (a number), filepath (as labels.csv writes it), kind (exact: the same features
bit for bit, which is the same pixels at the extractor's input size; near: thumbnails, or for
images without one features, above the similarity threshold: evaluation/duplicates.py). A
person may edit it: deleting a line takes that image out of its group, deleting a group's lines
leaves its images apart. Sampling and status read it as it stands;
images added since the last `patchwork duplicates` are in no group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.splits import Parts
from patchwork_cli.util.atomic import atomic_write

GROUPS_NAME = "duplicates.csv"
COLUMNS = ("group", "filepath", "kind")


@dataclass(frozen=True)
class DuplicateGroups:
    """Each labels.csv row's group (-1: none), as duplicates.csv has it."""

    group_of_row: np.ndarray  # (table rows,) int64

    @property
    def grouped(self) -> np.ndarray:
        return self.group_of_row >= 0

    def count(self) -> int:
        return len(np.unique(self.group_of_row[self.grouped]))

    def with_any(self, rows: np.ndarray) -> np.ndarray:
        """(table rows,) bool: the rows whose group holds one of `rows` (bool mask), themselves included."""
        groups = np.unique(self.group_of_row[rows & self.grouped])
        return np.isin(self.group_of_row, groups) & self.grouped

    def split(self, first: np.ndarray, second: np.ndarray) -> int:
        """How many groups hold rows of both masks (a group split across training and validation)."""
        a = set(self.group_of_row[first & self.grouped].tolist())
        return len(a & set(self.group_of_row[second & self.grouped].tolist()))


def write_groups(directory: Path, groups: pd.DataFrame) -> None:
    with atomic_write(Path(directory) / GROUPS_NAME, newline="") as handle:
        groups.to_csv(handle, index=False, columns=list(COLUMNS), lineterminator="\n")


def read_groups(directory: Path, table_filepaths: pd.Series) -> DuplicateGroups | None:
    """The groups of duplicates.csv over labels.csv's rows, or None before any `patchwork duplicates`."""
    path = Path(directory) / GROUPS_NAME
    try:
        groups = pd.read_csv(path, dtype={"group": "Int64", "filepath": str, "kind": str}, keep_default_na=False)
    except FileNotFoundError:
        return None
    except (ValueError, pd.errors.ParserError) as error:
        raise PatchworkError(
            f"{path}: not a duplicates table ({error}); delete it or run 'patchwork duplicates'"
        ) from None
    missing = [column for column in COLUMNS[:2] if column not in groups]
    if missing:
        raise PatchworkError(f"{path}, line 1: no {missing[0]!r} column; run 'patchwork duplicates' again")
    # in Arrow, on the table's Arrow strings: status reads this at a million rows (0.1 s, where a
    # pandas index of the paths takes 0.4 s and a Python dict of them most of a second)
    position = pc.index_in(pa.array(table_filepaths), value_set=pa.array(groups["filepath"], pa.string()))
    position = position.fill_null(-1).to_numpy()
    # -1 on the end: a row in no group takes it (and an empty file, no copies found, has only it)
    group_numbers = np.append(groups["group"].fillna(-1).to_numpy(np.int64), -1)
    group_of_row = group_numbers[position]
    # a group left with one member (the others deleted from labels.csv or the file) is no group
    values, counts = np.unique(group_of_row[group_of_row >= 0], return_counts=True)
    group_of_row[np.isin(group_of_row, values[counts < 2])] = -1
    return DuplicateGroups(group_of_row)


def duplicate_summary(project_dir: Path, table: pd.DataFrame) -> dict | None:
    """The groups of copies duplicates.csv holds, and how many are split across training and
    validation (a copy on both sides inflates every validation figure); None before any
    `patchwork duplicates`."""
    groups = read_groups(project_dir, table[FILEPATH])
    if groups is None:
        return None
    parts = Parts.of(table)
    return {
        "groups": groups.count(),
        "images": int(groups.grouped.sum()),
        "split": groups.split(parts.train, parts.validation),
    }
