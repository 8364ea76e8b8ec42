"""What a fit starts from: the current labels matched to the stored features, split into parts.

Gathered once by train and handed to whichever way it fits (keras_head.py or propagation.py),
so the two fit the same rows and the run they write covers the same images.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError
from patchwork_cli.modeling.spec import resolve_head
from patchwork_cli.store.config import Config
from patchwork_cli.store.features import DONE, FeatureStore
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.project import Project
from patchwork_cli.store.rowindex import RowMatch
from patchwork_cli.store.splits import Parts
from patchwork_cli.training.fingerprint import fingerprint

log = logging.getLogger("patchwork")


@dataclass(frozen=True, kw_only=True)
class TrainingInputs:
    config: Config  # the project's, with the command line's --head and --seed in place, and head auto resolved
    fingerprint: str  # of the config as asked (head auto, not what it resolved to): what --if-changed compares
    seed: int
    table: pd.DataFrame
    labels: np.ndarray  # (table rows, classes), NaN = unlabelled
    store: FeatureStore
    match: RowMatch  # where each table row's features are in the store
    feature_rows: np.ndarray  # the store row of each table row
    train_rows: np.ndarray  # table rows that are learnt from: labelled, with features, training part
    val_rows: np.ndarray  # the same for the validation part
    run_filepaths: list[str]  # the image of each row of the run's arrays
    predicted: np.ndarray  # (run rows,) bool: which rows of the run get a prediction

    @property
    def train_store_rows(self) -> np.ndarray:
        """The store rows of the training rows."""
        return self.feature_rows[self.train_rows]


def gather_inputs(project: Project, config: Config) -> TrainingInputs:
    """The inputs of a run on `config`, checked: an error when there is nothing to learn from."""
    table = project.labels()
    store = FeatureStore.open(project.features_location)
    if store is None:
        raise PatchworkError("features not extracted yet: run 'patchwork extract' first")
    match = store.match(table[FILEPATH].tolist(), project.directory)
    labels = table[config.classes].to_numpy(np.float64)
    has_features = store.table_status(match) == DONE
    parts = Parts.of(table)
    learnable = has_features & ~np.isnan(labels).all(axis=1)
    train_rows, val_rows = np.flatnonzero(learnable & parts.train), np.flatnonzero(learnable & parts.validation)
    _check_labels(labels, parts, has_features, train_rows, config.classes)
    asked = fingerprint(table, config, store)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, head=resolve_head(config.model.head, store.row_shape))
    )
    seed = config.training.seed if config.training.seed is not None else int(np.random.default_rng().integers(2**31))
    # The run's rows are the feature store's (predictions are written chunk for chunk beside
    # the features), and its filepaths are recorded; readers match them to labels.csv. While
    # the store follows labels.csv, so does the run, all its rows (images without features: NaN).
    # Every row with features is predicted, the rows no labels.csv row takes too: a chunk's
    # batch is then the same whatever was deleted from labels.csv, and so are its predictions.
    run_filepaths = table[FILEPATH].tolist() if match.in_order else store.filepaths()
    predicted = np.zeros(len(run_filepaths), bool)
    predicted[: match.store_rows] = store.status()[: match.store_rows] == DONE
    return TrainingInputs(
        config=config,
        fingerprint=asked,
        seed=seed,
        table=table,
        labels=labels,
        store=store,
        match=match,
        feature_rows=match.store_rows_of_table(),
        train_rows=train_rows,
        val_rows=val_rows,
        run_filepaths=run_filepaths,
        predicted=predicted,
    )


def _check_labels(labels: np.ndarray, parts: Parts, has_features, train_rows, classes) -> None:
    labelled = ~np.isnan(labels).all(axis=1) & ~parts.excluded
    without = int((labelled & ~has_features).sum())
    if without:
        log.warning("%d labelled image(s) have no features (not extracted or failed) and are left out", without)
    if not len(train_rows):
        raise PatchworkError(
            "no training labels: label some images that are not validation or excluded (patchwork label)"
        )
    train_labels = labels[train_rows]
    for k, name in enumerate(classes):
        for value, word in ((1, "positive"), (0, "negative")):
            if not (train_labels[:, k] == value).any():
                log.warning("class %r has no %s training labels; its output cannot learn it", name, word)
