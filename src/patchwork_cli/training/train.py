"""patchwork train: fit a head on the labelled rows' features, predict every row, publish a run.

The steps: gather the inputs (inputs.py), fit -- a Keras head (keras_head.py) or label
propagation over the features' nearest-neighbour graph (propagation.py, no TensorFlow) -- and
then the one way every run is written: its predictions and embeddings (prediction.py, on a
Dask cluster with `client`), its metrics on the current labels, its files, and publishing it as
LATEST. A run is staged beside models/ and renamed into place whole, so a killed train leaves
the previous run in charge.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from patchwork_cli.evaluation.report import score_run
from patchwork_cli.modeling.spec import is_labelprop
from patchwork_cli.store import runs
from patchwork_cli.store.project import Project
from patchwork_cli.store.run_metrics import RunMetrics
from patchwork_cli.store.splits import label_summary
from patchwork_cli.training.fingerprint import with_options
from patchwork_cli.training.inputs import TrainingInputs, gather_inputs
from patchwork_cli.training.keras_head import fit_keras_head
from patchwork_cli.training.out_of_fold import write_out_of_fold
from patchwork_cli.training.prediction import Fitted
from patchwork_cli.training.propagation import propagate_labels

log = logging.getLogger("patchwork")


@dataclass(frozen=True, kw_only=True)
class TrainReport:
    run_id: str
    epochs: int
    seconds: float
    train_rows: int
    validation_rows: int
    metrics: RunMetrics
    head: str = ""

    def as_dict(self) -> dict:
        """train --json: the fields in their order, the metrics as in metrics.json."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {**fields, "metrics": self.metrics.as_dict()}


def train(project: Project, *, head: str | None = None, seed: int | None = None, client=None) -> TrainReport:
    """Train a head on the current labels and publish it as a new run (LATEST).

    `head` and `seed` override model.head and training.seed. With `client` (a
    dask.distributed.Client) the prediction over all rows runs on its cluster.
    """
    inputs = gather_inputs(project, with_options(project.config, head=head, seed=seed))
    started = time.perf_counter()
    if is_labelprop(inputs.config.model.head):
        if client is not None:
            log.warning("label propagation runs in this process: the Dask cluster is not used for it")
        fitted = propagate_labels(inputs)
    else:
        fitted = fit_keras_head(inputs, features_location=project.features_location, client=client)
    return _publish(project, inputs, fitted, started)


def _publish(project: Project, inputs: TrainingInputs, fitted: Fitted, started: float) -> TrainReport:
    """Write the run (its arrays, metrics and files) into a staging directory and publish it."""
    config, table = inputs.config, inputs.table
    run_id = runs.new_run_id()
    staging = runs.staging_dir(project.directory, run_id)
    try:
        probabilities = inputs.match.gather(fitted.write(staging))
        runs.record_run_rows(staging, inputs.run_filepaths)
        write_out_of_fold(staging, inputs)
        metrics = score_run(
            project,
            # LATEST, the run this one replaces. evaluate compares a run with the one before it by id
            # (report.run_before): the same run, unless LATEST was set by hand or is gone, or two
            # runs of one second have ids that sort the other way.
            previous_run=runs.latest_run(project.directory),
            classes=config.classes,
            task=config.task,
            probabilities=probabilities,
            table=table,
        )
        seconds = time.perf_counter() - started
        _write_run_files(staging, inputs, fitted.history, metrics, run_id=run_id, seconds=seconds)
        runs.publish(project.directory, staging, run_id)
    except BaseException:
        runs.discard(staging)
        raise
    return TrainReport(
        run_id=run_id,
        epochs=len(fitted.history["loss"]),
        seconds=round(seconds, 3),
        train_rows=len(inputs.train_rows),
        validation_rows=len(inputs.val_rows),
        metrics=metrics,
        head=config.model.head,
    )


def _write_run_files(
    directory: Path, inputs: TrainingInputs, history: dict, metrics: RunMetrics, *, run_id: str, seconds: float
) -> None:
    config, table = inputs.config, inputs.table
    pd.DataFrame(history).rename_axis("epoch").to_csv(directory / runs.HISTORY_FILE)
    metrics.write(directory)
    (directory / runs.CONFIG_FILE).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    counts = label_summary(table, config.classes)
    runs.write_json(directory / runs.LABEL_COUNTS_FILE, counts)
    runs.RunRecord(
        run_id=run_id,
        classes=config.classes,
        task=config.task,
        head=config.model.head,
        output=config.model.output,
        seed=inputs.seed,
        epochs=len(history["loss"]),
        seconds=round(seconds, 3),
        rows=len(table),
        train_rows=len(inputs.train_rows),
        validation_rows=len(inputs.val_rows),
        labelled_images=counts["labelled"]["full"] + counts["labelled"]["partial"],
        features=inputs.store.identity,
        fingerprint=inputs.fingerprint,
    ).write(directory)
