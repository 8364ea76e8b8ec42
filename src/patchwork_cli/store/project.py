"""A patchwork project directory: discovery, paths, config, and the operations on its labels.

This is the public Python API the CLI wraps (see the README, "Python API"):

    from patchwork_cli import open_project
    project = open_project("myproj")
    df = project.labels()                       # the label table, journal applied
    project.label("images/cat1.jpg", cat=1, dog=0)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError, did_you_mean
from patchwork_cli.store.config import (
    MULTICLASS,
    MULTILABEL,
    TASKS,
    Config,
    load_config,
    replace_classes,
    replace_top_level,
    storage_location,
    validate_class_name,
    validate_classes,
)
from patchwork_cli.store.journal import JOURNAL_NAME, LabelStore, make_edit
from patchwork_cli.store.label_imports import read_label_edits
from patchwork_cli.store.label_schema import FILEPATH, FIXED_COLUMNS, SUBSET
from patchwork_cli.store.label_table import LABELS_NAME, check_one_class, empty_table, read_label_table
from patchwork_cli.store.paths import absolute_path, locations, stored_paths
from patchwork_cli.store.sources import scan_class_folders
from patchwork_cli.util.atomic import atomic_write_text
from patchwork_cli.util.locking import LOCK_NAME, project_lock

PROJECT_FILE = "patchwork.yaml"
FEATURES_NAME = "features.zarr"
FAILURES_NAME = "features_failures.csv"
REPLACED_DIR = ".replaced"
# What `init --force` moves aside (never deletes): everything a project run leaves behind.
PROJECT_ENTRIES = (PROJECT_FILE, LABELS_NAME, JOURNAL_NAME, FEATURES_NAME, FAILURES_NAME, "models", "reports")


@dataclasses.dataclass
class AddResult:
    """What happened to a list of image paths offered to a project."""

    added: int = 0
    known: int = 0  # already in the project
    duplicates: int = 0  # repeated within the offered list
    missing: list[str] = dataclasses.field(default_factory=list)  # added, but no such file (yet)


def find_project(explicit: Path | str | None = None, *, start: Path | str | None = None) -> Path:
    """The project directory: `explicit`, else the nearest parent of `start` (cwd) with patchwork.yaml."""
    if explicit is not None:
        directory = Path(explicit)
        if not (directory / PROJECT_FILE).is_file():
            raise PatchworkError(f"{directory}: not a patchwork project (no {PROJECT_FILE})")
        return directory.absolute()
    here = Path(start or os.getcwd()).absolute()
    for directory in (here, *here.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    raise PatchworkError(
        f"not inside a patchwork project ({here} or any parent); run 'patchwork init' or pass --project DIR"
    )


def open_project(directory: Path | str | None = None) -> Project:
    """Open the project at `directory`, or the one containing the current directory."""
    return Project(find_project(directory))


def template_text() -> str:
    """The commented patchwork.yaml that init lays down (packaged in the wheel, or the source tree's)."""
    packaged = resources.files("patchwork_cli") / "project_template" / PROJECT_FILE
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(str(resources.files("patchwork_cli"))).parents[1]
    return (source_tree / "project-template" / PROJECT_FILE).read_text(encoding="utf-8")


class Project:
    """An open project. Reads see labels.csv with the journal applied; writes are atomic and locked."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory).absolute()
        self.config_path = self.directory / PROJECT_FILE
        self.config: Config = load_config(self.config_path)
        self.store = LabelStore(self.directory, self.config.classes, self.multiclass)

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    @property
    def multiclass(self) -> bool:
        """Exactly one class per image (task: multiclass): a 1 sets the other classes to 0."""
        return self.config.task == MULTICLASS

    # --- paths ---

    def stored_paths(self, paths: Iterable[str], *, cwd: Path | str | None = None) -> list[str]:
        return stored_paths(paths, self.directory, cwd)

    def absolute_path(self, stored: str) -> str:
        return absolute_path(self.directory, stored)

    @property
    def features_location(self) -> str:
        """The feature store: features.zarr here, or where patchwork.yaml's storage.features says (a path or URL)."""
        return storage_location(self.directory, self.config.storage.features)

    def open_features(self):
        """The feature store (a features.FeatureStore), or None before any extract. A local
        path that does not exist is answered without importing zarr (half a second)."""
        location = self.features_location
        if "://" not in location and not Path(location).exists():
            return None
        from patchwork_cli.store.features import FeatureStore

        return FeatureStore.open(location)

    # --- reading ---

    def labels(self) -> pd.DataFrame:
        """The label table in the original patchwork format, with the journal applied."""
        return self.store.read()

    # --- label edits ---

    def label(self, filepath: str, *, seconds: float | None = None, **fields) -> dict:
        """Record one edit, e.g. label("a.jpg", dog=1, cat=None, exclude=False); durable on return.

        `filepath` is the path as it appears in labels.csv. Returns the fields recorded: in a
        multiclass project a class set to 1 comes with the other classes set to 0.
        """
        return self.record_edits([(filepath, fields, seconds)])[0]

    def record_edits(
        self, edits: Sequence[tuple[str, Mapping[str, object], float | None]], exact: bool = False
    ) -> list[dict]:
        """Record several (filepath, fields, seconds) edits in one durable append: all of them
        land, or (a crash mid-write) only whole lines of them. Returns the fields each recorded.

        `exact` records the fields as given, without a multiclass 1 setting the other classes
        to 0: an undo puts back values the table held, which may be a 1 beside unlabelled classes.
        """
        exclusive = self.multiclass and not exact
        records = [make_edit(path, fields, self.classes, seconds, exclusive) for path, fields, seconds in edits]
        self.store.edit(records)
        return [record["set"] for record in records]

    def edit_labels(self, edits: Iterable[tuple[str, Mapping[str, object]]]) -> int:
        """Record many edits (filepath as in labels.csv, fields) in one durable append."""
        records = [make_edit(filepath, fields, self.classes, exclusive=self.multiclass) for filepath, fields in edits]
        self.store.edit(records)
        return len(records)

    def import_labels(self, csv_path: Path | str, *, cwd: Path | str | None = None) -> int:
        """Apply the edits of an import CSV (see label_imports.read_label_edits) and compact.

        Filepaths may be written as in labels.csv or relative to `cwd`. Every row is
        checked first; an unknown filepath is an error and nothing is written.
        """
        edits = read_label_edits(Path(csv_path), self.classes, self.multiclass)
        table_paths = self.labels()[FILEPATH].tolist()
        rows = self.rows_of([(line, filepath) for line, filepath, _ in edits], str(csv_path), cwd, table_paths)
        count = self.edit_labels((table_paths[row], fields) for row, (_, _, fields) in zip(rows, edits, strict=True))
        self.store.compact()
        return count

    def rows_of(
        self,
        numbered: Iterable[tuple[int, str]],
        source: str,
        cwd: Path | str | None = None,
        table_paths: list[str] | None = None,
    ) -> list[int]:
        """The labels.csv row of each (line number, path) of `source`, in order.

        A path is taken as written in labels.csv, else as a path relative to `cwd` (or
        absolute), matched by the file it points to. A path that is not in the project is
        an error naming `source`, the line and the path. `table_paths` saves re-reading
        labels.csv when the caller has just read it.
        """
        numbered = list(numbered)
        table_paths = self.labels()[FILEPATH].tolist() if table_paths is None else table_paths
        row_of_path = {path: row for row, path in enumerate(table_paths)}
        row_of_location = None  # normalising every path of a big table is slow: only when needed
        offered = locations(self.directory, self.stored_paths([path for _, path in numbered], cwd=cwd))
        rows = []
        for (line, path), location in zip(numbered, offered, strict=True):
            row = row_of_path.get(path)
            if row is None:
                if row_of_location is None:
                    row_of_location = {where: row for row, where in enumerate(locations(self.directory, table_paths))}
                row = row_of_location.get(location)
            if row is None:
                raise PatchworkError(f"{source}, line {line}: {path!r} is not an image of this project")
            rows.append(row)
        return rows

    def compact(self) -> None:
        """Fold labels.journal into labels.csv."""
        self.store.compact()

    # --- images and classes ---

    def add_images(
        self, paths: Iterable[str], *, cwd: Path | str | None = None, subset: str | None = None
    ) -> AddResult:
        """Append images not yet in the project (paths relative to `cwd`); known paths are skipped."""
        stored = self.stored_paths(paths, cwd=cwd)
        with project_lock(self.directory, exclusive=True):
            table = self.store.load_unlocked()
            new, result = _new_paths(stored, table[FILEPATH].tolist(), self.directory)
            if new:
                new_rows = empty_table(self.classes, new)
                new_rows[SUBSET] = subset or ""
                self.store.replace_unlocked(pd.concat([table, new_rows], ignore_index=True))
        return result

    def add_class(self, name: str) -> None:
        """Add a class, unlabelled on every row."""
        validate_class_name(name)
        if name in self.classes:
            raise PatchworkError(f"class {name!r} already exists")
        self._change_classes([*self.classes, name], lambda table: table.assign(**{name: float("nan")}))

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; every label it holds moves with it."""
        if old not in self.classes:
            raise PatchworkError(
                f"unknown class {old!r}{did_you_mean(old, self.classes)}; classes: {', '.join(self.classes)}"
            )
        validate_class_name(new)
        if new in self.classes:
            raise PatchworkError(f"class {new!r} already exists")
        classes = [new if c == old else c for c in self.classes]
        self._change_classes(classes, lambda table: table.rename(columns={old: new}))

    def _change_classes(self, classes: list[str], transform) -> None:
        # labels.csv first, then patchwork.yaml, both under the exclusive lock, the journal
        # folded in before (its records name the old classes).
        new_config_text = replace_classes(self.config_path.read_text(encoding="utf-8"), classes)
        with project_lock(self.directory, exclusive=True):
            table = transform(self.store.load_unlocked())
            self.store.replace_unlocked(table, classes)
            atomic_write_text(self.config_path, new_config_text)
        self.config = load_config(self.config_path)
        self.store = LabelStore(self.directory, self.config.classes, self.multiclass)


def _new_paths(stored: list[str], known: Iterable[str], directory: Path) -> tuple[list[str], AddResult]:
    """The paths of `stored` whose images are not `known` yet, in order, without repeats."""
    result = AddResult()
    known_locations, seen = set(locations(directory, known)), set()
    new = []
    for path, location in zip(stored, locations(directory, stored), strict=True):
        if location in known_locations:
            result.known += 1
        elif location in seen:
            result.duplicates += 1
        else:
            seen.add(location)
            new.append(path)
    result.added = len(new)
    result.missing = _missing(directory, new)
    return new, result


def _missing(directory: Path, stored: list[str]) -> list[str]:
    """The stored paths with no file behind them (the project directory need not exist yet)."""
    return [p for p, location in zip(stored, locations(directory, stored), strict=True) if not os.path.exists(location)]


def init_project(
    directory: Path | str,
    *,
    images: Iterable[str] = (),
    classes: list[str] | None = None,
    labels: Path | str | None = None,
    force: bool = False,
    cwd: Path | str | None = None,
    task: str = MULTILABEL,
) -> tuple[Project, AddResult]:
    """Create a project at `directory` from image paths and/or an existing label table.

    Everything is validated before anything is written. An existing project is
    refused unless `force`, which moves its files into DIR/.replaced/<time>/ (nothing
    is deleted). Relative paths (in `images` and in the table) are relative to `cwd`.
    `task` is multilabel or multiclass (then a table row with two 1s is refused).
    """
    directory = _new_project_directory(directory, force)
    images = list(images)
    if task not in TASKS:
        raise PatchworkError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if labels is None and not images:
        raise PatchworkError("nothing to start from: give image paths (--images) and/or a label table (--labels)")

    table = read_label_table(Path(labels), classes, allow_missing_classes=True) if labels is not None else None
    if classes is None:
        if table is None or len(table.columns) == len(FIXED_COLUMNS):
            raise PatchworkError("no classes: give --classes a,b,c (or a --labels table with class columns)")
        classes = [c for c in table.columns[len(FIXED_COLUMNS) :]]
    classes = validate_classes(list(classes))

    if table is None:
        table = empty_table(classes)
    else:
        if task == MULTICLASS:
            check_one_class(table[classes].to_numpy() == 1, classes, str(labels))
        table[FILEPATH] = stored_paths(table[FILEPATH], directory, cwd)
        if len(set(locations(directory, table[FILEPATH]))) < len(table):
            raise PatchworkError(f"{labels}: two rows name the same image (written two ways)")
    new, result = _new_paths(stored_paths(images, directory, cwd), table[FILEPATH].tolist(), directory)
    result.missing = _missing(directory, table[FILEPATH].tolist()) + result.missing
    table = pd.concat([table, empty_table(classes, new)], ignore_index=True)
    return _create_project(directory, table, classes, task, force), result


def init_from_folders(
    directory: Path | str, folder: Path | str, *, force: bool = False, cwd: Path | str | None = None
) -> tuple[Project, AddResult]:
    """Create a multiclass project over FOLDER/<class>/... (the layout of Keras'
    image_dataset_from_directory): the classes are the sub-directories' names, sorted, and
    each image is labelled by the one it is in (its class 1, the others 0)."""
    directory = _new_project_directory(directory, force)
    by_class = scan_class_folders(Path(folder))
    for name in by_class:
        try:
            validate_class_name(name)
        except PatchworkError as error:
            raise PatchworkError(f"{Path(folder) / name}: {error}") from None
    classes = list(by_class)
    paths = [path for name in classes for path in by_class[name]]
    if not paths:
        raise PatchworkError(f"{folder}: no images in its class sub-directories ({', '.join(classes)})")
    table = empty_table(classes, stored_paths(paths, directory, cwd))
    class_of_row = np.repeat(np.arange(len(classes)), [len(by_class[name]) for name in classes])
    table[classes] = np.eye(len(classes))[class_of_row]
    return _create_project(directory, table, classes, MULTICLASS, force), AddResult(added=len(table))


def _new_project_directory(directory: Path | str, force: bool) -> Path:
    directory = Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise PatchworkError(f"{directory}: exists and is not a directory")
    if (directory / PROJECT_FILE).exists() and not force:
        raise PatchworkError(
            f"{directory} is already a patchwork project; use --force to start over "
            f"(the old files are moved to {REPLACED_DIR}/, not deleted)"
        )
    return directory


def _create_project(directory: Path, table: pd.DataFrame, classes: list[str], task: str, force: bool) -> Project:
    """Write a new project's labels.csv and patchwork.yaml (last: its presence makes the project)."""
    config_text = replace_top_level(replace_classes(template_text(), classes), "task", task)
    directory.mkdir(parents=True, exist_ok=True)
    if force:
        _move_aside(directory)
    store = LabelStore(directory, classes)
    store.replace_unlocked(table[[*FIXED_COLUMNS, *classes]], classes)
    (directory / LOCK_NAME).touch()
    atomic_write_text(directory / PROJECT_FILE, config_text)
    return Project(directory)


def _move_aside(directory: Path) -> None:
    present = [name for name in PROJECT_ENTRIES if (directory / name).exists()]
    if not present:
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = directory / REPLACED_DIR / stamp
    target.mkdir(parents=True)
    for name in present:
        shutil.move(str(directory / name), str(target / name))
