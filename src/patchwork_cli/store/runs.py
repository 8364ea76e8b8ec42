"""models/: one directory per training run, and models/LATEST naming the newest complete one.

A run is written under models/.incomplete-<id>/ and renamed to models/<id>/ only when
everything in it is on disk; LATEST is then replaced atomically. A killed train leaves
at most a dot-directory that nothing mistakes for a run, and LATEST on the previous one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.config import MULTILABEL
from patchwork_cli.store.rowindex import FILEPATH_CHUNK, NO_ROW, ROWS_ATTR, RowMatch, RowRecord, match_rows
from patchwork_cli.util.atomic import atomic_write_text, fsync_directory
from patchwork_cli.util.chunked import gather_rows

MODELS_NAME = "models"
LATEST_NAME = "LATEST"
STAGING_PREFIX = ".incomplete-"
# The files of a run directory.
MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
# metrics.json is run_metrics.METRICS_FILE, beside RunMetrics, the one reader of its keys
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
LABEL_COUNTS_FILE = "label_counts.json"
PREDICTIONS_NAME = "predictions.zarr"
EMBEDDINGS_NAME = "embeddings.zarr"
# The image of each row of the two arrays above, with the count and digest in its attrs
# (rowindex.py): a run's predictions are only ever used for the images they were made for.
FILEPATHS_NAME = "filepaths.zarr"
# The principal axes a run's embeddings are stored on, when the head's are wider than
# util.projection.REDUCED_WIDTH (training/prediction.py): (embedding width, REDUCED_WIDTH) float32.
EMBEDDING_AXES_FILE = "embedding_axes.npy"
# The labelled rows' out-of-fold probabilities (training/out_of_fold.py): `filepaths` and
# `probabilities` (n, C), what `disagree` ranks their labels by
OUT_OF_FOLD_FILE = "out_of_fold.npz"


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """run.json: what a run was trained on and how. Read and written here only. A run written by
    an older patchwork lacks the keys added since, which read as their defaults; keys this
    version does not know are ignored."""

    run_id: str
    classes: list[str]
    task: str = MULTILABEL  # runs from before the task key are multilabel
    head: str = ""
    output: str = ""
    seed: int | None = None
    epochs: int = 0
    seconds: float = 0.0
    rows: int = 0
    train_rows: int = 0
    validation_rows: int = 0
    labelled_images: int = 0
    features: dict = field(default_factory=dict)  # the feature store's extractor identity
    fingerprint: str | None = None  # what train --if-changed compares (training/fingerprint.py)

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        data = read_json(Path(run_dir) / RUN_FILE)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RUN_FILE, dataclasses.asdict(self))


def new_run_id() -> str:
    """Sortable by time, unique across hosts: 20261129-073612-3f9a."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def models_dir(project_dir: Path) -> Path:
    return Path(project_dir) / MODELS_NAME


def staging_dir(project_dir: Path, run_id: str) -> Path:
    path = models_dir(project_dir) / f"{STAGING_PREFIX}{run_id}"
    path.mkdir(parents=True)
    return path


def publish(project_dir: Path, staging: Path, run_id: str) -> Path:
    """Rename the finished staging directory into place, then point LATEST at it."""
    final = models_dir(project_dir) / run_id
    os.replace(staging, final)
    fsync_directory(final.parent)
    atomic_write_text(models_dir(project_dir) / LATEST_NAME, run_id + "\n")
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def list_runs(project_dir: Path) -> list[str]:
    """Complete runs, oldest first."""
    directory = models_dir(project_dir)
    if not directory.is_dir():
        return []
    return sorted(
        p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / RUN_FILE).is_file()
    )


def latest_run(project_dir: Path) -> str | None:
    try:
        run_id = (models_dir(project_dir) / LATEST_NAME).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return run_id if (models_dir(project_dir) / run_id / RUN_FILE).is_file() else None


def resolve_run(project_dir: Path, run_id: str | None) -> Path:
    """The directory of run `run_id` (LATEST when None); a clear error listing the runs otherwise."""
    runs = list_runs(project_dir)
    if run_id is None:
        run_id = latest_run(project_dir)
        if run_id is None:
            raise PatchworkError("no trained model yet: run 'patchwork train' first")
    elif run_id not in runs:
        known = ", ".join(runs) if runs else "none yet"
        raise PatchworkError(f"unknown run {run_id!r}; runs: {known}")
    return models_dir(project_dir) / run_id


def read_out_of_fold(run_dir: Path) -> dict[str, np.ndarray] | None:
    """{filepath: its out-of-fold probabilities (C,)} of the rows labelled when the run was trained
    (training and validation), or None for a run without them (trained before runs kept them, or
    with training.label_folds 0)."""
    try:
        with np.load(Path(run_dir) / OUT_OF_FOLD_FILE) as stored:
            return dict(zip(stored["filepaths"].tolist(), stored["probabilities"], strict=True))
    except FileNotFoundError:
        return None


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def record_run_rows(run_dir: Path, filepaths: list[str]) -> None:
    """Record `filepaths` as the images of the run's rows."""
    import zarr

    column = zarr.create_array(
        str(Path(run_dir) / FILEPATHS_NAME), shape=(len(filepaths),), chunks=(FILEPATH_CHUNK,), dtype=str, fill_value=""
    )
    column[:] = np.array(filepaths, dtype=object)
    column.attrs[ROWS_ATTR] = RowRecord.of(filepaths).as_dict()


def run_match(
    run_dir: Path, table_filepaths: list[str], directory: Path | None = None, table_record: RowRecord | None = None
) -> RowMatch:
    """Where each labels.csv row's predictions are among the run's rows. A run trained before
    runs recorded their images is taken to follow labels.csv row for row, as it was meant to."""
    import zarr

    stored = zarr.open_array(str(Path(run_dir) / PREDICTIONS_NAME), mode="r")
    try:
        column = zarr.open_array(str(Path(run_dir) / FILEPATHS_NAME), mode="r")
    except FileNotFoundError:
        return match_rows(table_filepaths, None, stored.shape[0], list)
    record = RowRecord.from_dict(column.attrs.get(ROWS_ATTR))
    return match_rows(table_filepaths, record, stored.shape[0], lambda: column[:].tolist(), directory, table_record)


def read_run_array(run_dir: Path, name: str, match: RowMatch) -> np.ndarray:
    """A run's per-row zarr array (PREDICTIONS_NAME or EMBEDDINGS_NAME) as float32 in labels.csv's
    order (`match`, from run_match), NaN for rows the run has no prediction for (images added
    since, or whose path was changed by hand). Zarr is imported here so that commands which
    never read a run do not pay for it."""
    import zarr

    stored = zarr.open_array(str(Path(run_dir) / name), mode="r")
    if match.in_order:  # the common case: read only the rows labels.csv has
        out = np.full((match.table_rows, stored.shape[1]), np.nan, np.float32)
        present = min(match.table_rows, match.store_rows)
        out[:present] = stored[:present]
        return out
    return match.gather(np.asarray(stored[: match.store_rows], dtype=np.float32))


def read_run_rows(run_dir: Path, name: str, match: RowMatch, table_rows: np.ndarray) -> np.ndarray:
    """Some labels.csv rows (`table_rows`) of a run's per-row zarr array, as float32, a chunk at a
    time: memory for those rows alone (NaN for a row the run has no prediction for)."""
    import zarr

    stored = zarr.open_array(str(Path(run_dir) / name), mode="r")
    run_rows = match.store_rows_of_table()[np.asarray(table_rows, dtype=np.int64)]
    return gather_rows(stored, np.where(run_rows < match.store_rows, run_rows, NO_ROW))
