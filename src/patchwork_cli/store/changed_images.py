"""Images whose content changed under the same path, and the labels they leave to review.

A row extracted from an image file records the file's signature (size, mtime, a digest of its
bytes: util/image_files.py). The file changed when its size or mtime differs and its digest,
read again to confirm, differs too (a file touched, or copied back, is the same image).
`extract` re-extracts changed images; `status` counts those it has not yet.

A changed image that holds labels keeps them, and is listed in changed-images.txt until the
person reviews it: any label edit of that image made after the list was last written (the
window's key, `label --import`) takes it off. The file is a plain path list, so
`patchwork label --paths changed-images.txt` opens the window on exactly those images. Whoever
folds the journal into labels.csv (which drops the edits' times) takes the reviewed images off
first (prune_reviewed), under the exclusive project lock.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.util.atomic import atomic_write
from patchwork_cli.util.checksums import file_digest

CHANGED_NAME = "changed-images.txt"
_HEADER = (
    "# Labelled images whose content changed after extraction; patchwork extract re-extracted them.\n"
    "# Their labels are kept: review them with `patchwork label --paths changed-images.txt`\n"
    "# (an image's line goes once it has a label edit). Lines may be deleted by hand.\n"
)


@dataclass(frozen=True)
class ChangeScan:
    changed: np.ndarray  # store rows whose image's content is not what was extracted
    touched: np.ndarray  # store rows whose file's size/mtime moved, its content the same
    touched_signatures: np.ndarray  # (len(touched), 3) their signatures now
    missing: int  # files gone


def scan_changes(store, rows: np.ndarray, path_of: Callable[[int], str]) -> ChangeScan:
    """Which of store `rows` (`path_of(row)`: the row's image file) changed since they were extracted;
    rows without a signature (not done, imported, extracted before signatures) are skipped."""
    from patchwork_cli.store.features import DONE  # here: the label store imports this module, not zarr

    rows = np.asarray(rows, dtype=np.int64)
    none = ChangeScan(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64), 0)
    if not store.has_image_records or not len(rows):
        return none
    signatures = store.signatures()
    signed = rows[(store.status()[rows] == DONE) & signatures[rows].any(axis=1)]
    changed, touched, now, missing = [], [], [], 0
    for row in signed.tolist():
        path = path_of(row)
        try:
            stat = os.stat(path)
        except OSError:
            missing += 1
            continue
        size, mtime, digest = signatures[row].tolist()
        if stat.st_size == size and stat.st_mtime_ns == mtime:
            continue
        if stat.st_size == size and file_digest(path) == digest:
            touched.append(row)
            now.append((size, stat.st_mtime_ns, digest))
        else:
            changed.append(row)
    return ChangeScan(
        np.array(changed, np.int64), np.array(touched, np.int64), np.array(now, np.int64).reshape(-1, 3), missing
    )


def read_review_list(directory: Path) -> list[str]:
    """changed-images.txt's images as it stands (no file: none)."""
    try:
        text = (Path(directory) / CHANGED_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def to_review(directory: Path, journal) -> list[str]:
    """The listed images with no label edit in `journal` (journal.Journal, read only when there is
    a list) since the list was written."""
    listed = read_review_list(directory)
    return _unreviewed(directory, listed, journal.read()) if listed else []


def add_to_review(directory: Path, filepaths: list[str], journal) -> None:
    """List `filepaths` (changed labelled images) for review, beside those still unreviewed by
    `journal`'s edits. The caller holds the exclusive project lock."""
    kept = to_review(directory, journal)
    _write(directory, list(dict.fromkeys(kept + list(filepaths))))


def prune_reviewed(directory: Path, records: list[dict]) -> None:
    """Take off the list the images that journal `records` reviewed, before the journal is folded
    away (it holds the edits' times). The caller holds the exclusive project lock."""
    listed = read_review_list(directory)
    if listed:
        kept = _unreviewed(directory, listed, records)
        if len(kept) < len(listed):
            _write(directory, kept)


def _unreviewed(directory: Path, listed: list[str], records: list[dict]) -> list[str]:
    written = (Path(directory) / CHANGED_NAME).stat().st_mtime
    reviewed = {r[FILEPATH] for r in records if r["set"] and _seconds(r.get("time")) >= written}
    return [path for path in listed if path not in reviewed]


def _seconds(time: object) -> float:
    try:
        return datetime.datetime.fromisoformat(str(time)).timestamp()
    except ValueError:
        return float("-inf")  # a record without a readable time reviews nothing


def _write(directory: Path, filepaths: list[str]) -> None:
    path = Path(directory) / CHANGED_NAME
    if not filepaths:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as handle:
        handle.write(_HEADER + "".join(f"{p}\n" for p in filepaths))
