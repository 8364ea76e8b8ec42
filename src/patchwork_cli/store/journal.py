"""The label store: labels.csv (its format in store/label_table.py) plus labels.journal, the
edits not yet folded into it.

labels.journal is an append-only log of edits, one JSON object per line (time,
filepath, the fields set, the seconds spent), durable once written and fsynced.
Every reader sees the table with the journal replayed on top; compaction folds the
journal into a new labels.csv (temp file + os.replace) and then truncates the
journal. Replay is idempotent, so a crash between those two steps loses nothing.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.changed_images import prune_reviewed
from patchwork_cli.store.label_cache import read_label_table_cached
from patchwork_cli.store.label_schema import FILEPATH, TEXT_COLUMNS
from patchwork_cli.store.label_table import (
    LABELS_NAME,
    check_field,
    check_one_class,
    exclusive_fields,
    write_label_table,
)
from patchwork_cli.util.atomic import atomic_write
from patchwork_cli.util.locking import project_lock

log = logging.getLogger("patchwork")

JOURNAL_NAME = "labels.journal"


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
        checked = exclusive_fields(filepath, checked, classes)
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        FILEPATH: filepath,  # the row by labels.csv's filepath, as "set" names its fields by their columns
        "set": checked,
        "seconds": None if seconds is None else round(float(seconds), 3),
    }


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
                    and isinstance(record.get(FILEPATH), str)
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
    rows = pd.Index(table[FILEPATH]).get_indexer([r[FILEPATH] for r in records])
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
                log.warning("labels.journal: %s: %s; ignored", record[FILEPATH], error)
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
        elif key in TEXT_COLUMNS:
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
        known = pd.Index(table[FILEPATH]) if records else None
        waiting = [record for record in records if record[FILEPATH] not in known]
        prune_reviewed(self.directory, records)  # before the edits' times are folded away
        write_label_table(table, self.csv_path, self.classes if classes is None else classes)
        self.journal.replace(waiting)
