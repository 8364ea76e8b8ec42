"""A labelling session: the queue of images a person works through, the labels each one
holds, and every change written to the journal the moment it is made.

No drawing here (viewer.py draws a session), so the editing rules are testable on their own.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd

from . import runs
from .errors import PatchworkError
from .images import ImageError, load_display_image

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


@dataclasses.dataclass(frozen=True)
class Picture:
    """What to show for an image: its pixels, or why there are none."""

    pixels: np.ndarray | None
    problem: str | None = None


def rows_for_paths(project, table: pd.DataFrame, lines: Iterable[tuple[int, str]], source: str, cwd=None) -> list[int]:
    """The labels.csv rows of (line number, path) pairs, by the rule of `label --import`
    (Project.rows_of: as written in labels.csv, else the file the path points to). Repeats
    are dropped: an image is labelled once per session."""
    return list(dict.fromkeys(project.rows_of(lines, source, cwd, table["filepath"].tolist())))


def latest_probabilities(project, rows: Sequence[int], filepaths: list[str]) -> np.ndarray:
    """(len(rows), classes) probabilities of the latest run in the project's class order, for
    `rows` of labels.csv (whose filepath column is `filepaths`); NaN where there is no run, the
    run does not know the class, or it has no prediction for the image (newer than the run)."""
    out = np.full((len(rows), len(project.classes)), np.nan, np.float32)
    run_id = runs.latest_run(project.directory)
    if run_id is None or not len(rows):
        return out
    run_dir = runs.models_dir(project.directory) / run_id
    run_classes = runs.read_json(run_dir / runs.RUN_FILE).get("classes", [])
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
    """

    def __init__(
        self,
        project,
        rows: Sequence[int],
        table: pd.DataFrame | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[str], np.ndarray] = load_display_image,
    ):
        if not len(rows):
            raise PatchworkError("no images to label")
        self.project = project
        self.classes = project.classes  # as they are now; a rename during the session is not followed
        table = project.labels() if table is None else table
        probabilities = latest_probabilities(project, rows, table["filepath"].tolist())
        picked = table.iloc[list(rows)]
        self.images = [
            QueuedImage(
                row=int(row),
                filepath=record["filepath"],
                values={c: None if math.isnan(record[c]) else int(record[c]) for c in self.classes},
                exclude=bool(record["exclude"]),
                validation=bool(record["validation"]),
                probabilities=dict(zip(self.classes, map(float, probabilities[i]), strict=True)),
            )
            for i, (row, record) in enumerate(zip(rows, picked.to_dict("records"), strict=True))
        ]
        self.position = 0
        self.edits = 0
        self._clock = clock
        self._since = clock()
        self._loader = loader
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchwork-prefetch")
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
        self.position = target
        self._since = self._clock()
        self._prefetch()
        return True

    # --- editing: each method writes one journal record (or none when nothing changes) ---

    def cycle_class(self, index: int) -> None:
        """Class `index`: unlabelled -> 1 -> 0 -> unlabelled."""
        if not 0 <= index < len(self.classes):
            return
        name = self.classes[index]
        following = {None: 1, 1: 0, 0: None}[self.current.values[name]]
        self._record({name: following})

    def rest_negative(self) -> None:
        """Every class still unlabelled on this image becomes 0."""
        self._record({c: 0 for c, value in self.current.values.items() if value is None})

    def toggle_exclude(self) -> None:
        self._record({"exclude": not self.current.exclude})

    def toggle_validation(self) -> None:
        self._record({"validation": not self.current.validation})

    def _record(self, fields: dict) -> None:
        if not fields:
            return
        now = self._clock()
        image = self.current
        # Durable first, then shown: the window never displays a label the journal lacks. What
        # is shown is what was recorded (in a multiclass project a 1 also sets the others to 0).
        recorded = self.project.label(image.filepath, seconds=now - self._since, **fields)
        self._since = now
        self.edits += 1
        for key, value in recorded.items():
            if key in image.values:
                image.values[key] = value
            else:
                setattr(image, key, value)

    # --- pictures ---

    def picture(self) -> Picture:
        """The current image's pixels (waits for the prefetch thread if it is not done yet)."""
        return self._future(self.position).result()

    def _prefetch(self) -> None:
        wanted = range(max(self.position - 1, 0), min(self.position + PREFETCH_AHEAD, len(self.images) - 1) + 1)
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
            return Picture(self._loader(path))
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
