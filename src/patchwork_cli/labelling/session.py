"""A labelling session: the queue of images a person works through, the labels each one
holds, every change written to the journal the moment it is made, and the undo stack.

No drawing here (labelling/image_window.py and labelling/grid_window.py draw a session; grid
mode's pages are labelling/grid_pages.py), so the editing rules are testable on their own.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store import runs
from patchwork_cli.store.label_schema import EXCLUDE, FILEPATH, VALIDATION
from patchwork_cli.util.images import ImageError, load_display_image

if TYPE_CHECKING:
    from patchwork_cli.store.project import Project

# Keys 1..9 then 0 reach the first ten classes.
CLASS_KEYS = "1234567890"
# Images decoded ahead of the one on screen (and the one before it kept), so stepping is instant.
PREFETCH_AHEAD = 3


@dataclasses.dataclass
class QueuedImage:
    """One image of the session and its labels as they stand (journal included)."""

    row: int
    filepath: str  # as stored in labels.csv
    values: dict[str, int | None]  # class -> 1, 0 or None (unlabelled)
    exclude: bool
    validation: bool
    probabilities: dict[str, float]  # class -> the latest model's probability, NaN if none
    # (class, value) that `enter` accepts: what `disagree`'s out-of-sample model says the label is
    suggestion: tuple[str, int] | None = None


@dataclasses.dataclass(frozen=True)
class Edit:
    """One step of the undo stack: the queue positions one key changed and, for each, the
    fields its record set, with the values they held before."""

    earlier: dict[int, dict[str, object]]  # position -> field -> value before the edit


@dataclasses.dataclass(frozen=True)
class Pace:
    """How the sitting goes, for the window's status line."""

    labelled: int  # images with an edit of this session (undone edits do not count)
    per_minute: float  # labelled images per minute since the session started
    on_image: float  # seconds since the current image (or page) came on screen


@dataclasses.dataclass(frozen=True)
class Picture:
    """What to show for an image: its pixels, or why there are none."""

    pixels: np.ndarray | None  # RGB
    problem: str | None = None
    # The pixels with an opaque alpha channel, made by the prefetch thread: matplotlib's Agg
    # draws RGBA at half the cost of RGB, which it would convert on every draw.
    rgba: np.ndarray | None = None


def rows_for_paths(
    project: Project, table: pd.DataFrame, lines: Iterable[tuple[int, str]], source: str, cwd=None
) -> list[int]:
    """The labels.csv rows of (line number, path) pairs, by the rule of `label --import`
    (Project.rows_of: as written in labels.csv, else the file the path points to). Repeats
    are dropped: an image is labelled once per session."""
    return list(dict.fromkeys(project.rows_of(lines, source, cwd, table[FILEPATH].tolist())))


def latest_probabilities(project: Project, rows: Sequence[int], filepaths: list[str]) -> np.ndarray:
    """(len(rows), classes) probabilities of the latest run in the project's class order, for
    `rows` of labels.csv (whose filepath column is `filepaths`); NaN where there is no run, the
    run does not know the class, or it has no prediction for the image (newer than the run)."""
    out = np.full((len(rows), len(project.classes)), np.nan, np.float32)
    run_id = runs.latest_run(project.directory)
    if run_id is None or not len(rows):
        return out
    run_dir = runs.models_dir(project.directory) / run_id
    run_classes = runs.RunRecord.read(run_dir).classes
    match = runs.run_match(run_dir, filepaths, project.directory)
    predictions = runs.read_run_array(run_dir, runs.PREDICTIONS_NAME, match)[np.asarray(rows)]
    for column, name in enumerate(project.classes):
        if name in run_classes and run_classes.index(name) < predictions.shape[1]:
            out[:, column] = predictions[:, run_classes.index(name)]
    return out


class LabelSession:
    """The images of one sitting, in order, with a position; edits go straight to the journal.

    Each journal record carries the seconds since the image came on screen or since the
    previous edit of it, whichever is later, so a file's records add up to the time spent on it.
    Every edit goes on an undo stack; undo appends records that put the earlier values back.
    """

    def __init__(
        self,
        project: Project,
        rows: Sequence[int],
        table: pd.DataFrame | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[str], np.ndarray] = load_display_image,
        advance_after_n: bool | None = None,
        suggestions: Mapping[int, tuple[str, int]] | None = None,
    ):
        if not len(rows):
            raise PatchworkError("no images to label")
        self.project = project
        self.classes = project.classes  # as they are now; a rename during the session is not followed
        table = project.labels() if table is None else table
        probabilities = latest_probabilities(project, rows, table[FILEPATH].tolist())
        picked = table.iloc[list(rows)]
        self.images = [
            QueuedImage(
                row=int(row),
                filepath=record[FILEPATH],
                values={c: None if math.isnan(record[c]) else int(record[c]) for c in self.classes},
                exclude=bool(record[EXCLUDE]),
                validation=bool(record[VALIDATION]),
                probabilities=dict(zip(self.classes, map(float, probabilities[i]), strict=True)),
                suggestion=(suggestions or {}).get(int(row)),
            )
            for i, (row, record) in enumerate(zip(rows, picked.to_dict("records"), strict=True))
        ]
        self.position = 0
        self.edits = 0
        # None: as patchwork.yaml's labelling.advance_after_n says (a --advance-after-n flag overrides it)
        self.advance_after_n = project.config.labelling.advance_after_n if advance_after_n is None else advance_after_n
        self.undo_stack: list[Edit] = []
        self._edited = collections.Counter()  # position -> edits of it on the undo stack
        self._clock = clock
        self._started = self._shown_at = self._since = clock()
        self._loader = loader
        self.prefetch_ahead = PREFETCH_AHEAD  # images decoded ahead of the current one
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="patchwork-prefetch", initializer=_background_priority
        )
        self._loading: dict[int, Future] = {}
        self.finished = False
        self._prefetch()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def current(self) -> QueuedImage:
        return self.images[self.position]

    # --- moving ---

    def step(self, offset: int) -> bool:
        """Move by `offset` images, staying inside the queue; True if the position changed."""
        target = min(max(self.position + offset, 0), len(self.images) - 1)
        if target == self.position:
            return False
        self.go_to(target)
        return True

    def go_to(self, position: int) -> None:
        """Show the image at `position`: its seconds start now, and the ones after it are decoded ahead."""
        self.position = position
        self._shown_at = self._since = self._clock()
        self._prefetch()

    @property
    def one_key(self) -> bool:
        """A class key labels the image whole and moves on (multiclass: one class per image)."""
        return self.project.multiclass

    # --- editing: each method writes one journal record (or none when nothing changes) ---

    def class_key(self, index: int) -> bool:
        """The key of class `index`: in one-key mode (multiclass) the image is that class;
        otherwise the class cycles. True when the image is done and the next should show."""
        if not 0 <= index < len(self.classes):
            return False
        if self.one_key:
            self.choose_class(index)
            return True
        self.cycle_class(index)
        return False

    def choose_class(self, index: int) -> None:
        """The image is class `index` (the others become 0); no record when it already says so."""
        name = self.classes[index]
        if self.current.values != {c: int(c == name) for c in self.classes}:
            self._record({name: 1})

    def accept_suggestion(self) -> bool:
        """The image takes its suggestion (multiclass: it is that class; multilabel: that class
        takes that value). False when it has none (or a class renamed since)."""
        suggestion = self.current.suggestion
        if suggestion is None or suggestion[0] not in self.classes:
            return False
        name, value = suggestion
        if self.one_key and value == 1:
            self.choose_class(self.classes.index(name))
        elif self.current.values[name] != value:
            self._record({name: value})
        return True

    def cycle_class(self, index: int) -> None:
        """Class `index`: unlabelled -> 1 -> 0 -> unlabelled."""
        name = self.classes[index]
        following = {None: 1, 1: 0, 0: None}[self.current.values[name]]
        self._record({name: following})

    def rest_negative(self) -> bool:
        """Every class still unlabelled on this image becomes 0. True when the next image
        should show (labelling.advance_after_n)."""
        self._record({c: 0 for c, value in self.current.values.items() if value is None})
        return self.advance_after_n

    def toggle_exclude(self) -> None:
        self._record({EXCLUDE: not self.current.exclude})

    def toggle_validation(self) -> None:
        self._record({VALIDATION: not self.current.validation})

    def record_page(self, fields_by_position: Mapping[int, dict]) -> None:
        """One record per image of a page (grid mode), in one append; the seconds since the
        page came on screen are shared equally between them. Undo reverts the page whole."""
        self._edit(dict(fields_by_position))

    def undo(self) -> bool:
        """Revert the most recent edit not yet undone, by new records that put the earlier values
        back, and show its image (the first, for a page). False when there is nothing to undo."""
        if not self.undo_stack:
            return False
        edit = self.undo_stack.pop()
        self._edited.subtract(edit.earlier.keys())
        self._write(edit.earlier, exact=True)
        self.go_to(min(edit.earlier))
        return True

    def _record(self, fields: dict) -> None:
        if fields:
            self._edit({self.position: fields})

    def _edit(self, fields_by_position: dict[int, dict]) -> None:
        before = {position: self._state(self.images[position]) for position in fields_by_position}
        recorded = self._write(fields_by_position)
        earlier = {position: {key: before[position][key] for key in recorded[position]} for position in recorded}
        self.undo_stack.append(Edit(earlier))
        self._edited.update(earlier.keys())

    def _write(self, fields_by_position: dict[int, dict], exact: bool = False) -> dict[int, dict]:
        """Journal one record per position (seconds since the image came on screen or was
        last edited, shared between them), then show what was recorded."""
        now = self._clock()
        share = (now - self._since) / len(fields_by_position)
        edits = [(self.images[p].filepath, fields, share) for p, fields in fields_by_position.items()]
        # Durable first, then shown: the window never displays a label the journal lacks. What
        # is shown is what was recorded (in a multiclass project a 1 also sets the others to 0).
        recorded = dict(zip(fields_by_position, self.project.record_edits(edits, exact=exact), strict=True))
        self._since = now
        self.edits += len(recorded)
        for position, fields in recorded.items():
            _show_fields(self.images[position], fields)
        return recorded

    @staticmethod
    def _state(image: QueuedImage) -> dict[str, object]:
        return {**image.values, EXCLUDE: image.exclude, VALIDATION: image.validation}

    # --- pace ---

    def pace(self) -> Pace:
        now = self._clock()
        labelled = sum(1 for count in self._edited.values() if count > 0)
        minutes = (now - self._started) / 60
        return Pace(labelled, labelled / minutes if minutes > 0 else 0.0, now - self._shown_at)

    # --- pictures ---

    def picture(self, position: int | None = None) -> Picture:
        """The pixels of the image at `position` (default: the current one); waits for the
        prefetch thread if it is not done yet."""
        return self._future(self.position if position is None else position).result()

    def _prefetch(self) -> None:
        last = min(self.position + self.prefetch_ahead, len(self.images) - 1)
        wanted = range(max(self.position - 1, 0), last + 1)
        for position in list(self._loading):
            if position not in wanted:
                self._loading.pop(position).cancel()
        for position in wanted:
            self._future(position)

    def _future(self, position: int) -> Future:
        if position not in self._loading:
            path = self.project.absolute_path(self.images[position].filepath)
            self._loading[position] = self._pool.submit(self._load, path)
        return self._loading[position]

    def _load(self, path: str) -> Picture:
        try:
            pixels = self._loader(path)
            return Picture(pixels, rgba=np.dstack((pixels, np.full(pixels.shape[:2], 255, np.uint8))))
        except ImageError as error:
            return Picture(None, str(error))

    # --- ending ---

    def finish(self) -> None:
        """End the session: stop prefetching and fold the journal into labels.csv (once)."""
        if self.finished:
            return
        self.finished = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.project.compact()


def _background_priority() -> None:
    """Decoding ahead yields the CPU to the window drawing the image a key asked for (the
    prefetch starts at that key). Linux keeps a niceness per thread; elsewhere nothing changes."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _show_fields(image: QueuedImage, fields: Mapping[str, object]) -> None:
    for key, value in fields.items():
        if key in image.values:
            image.values[key] = value
        else:
            setattr(image, key, value)
