"""What `patchwork evaluate` does with a run: score it on the current labels (score_run, which
train calls too for the metrics a run records), draw the plots into reports/, and line runs up
against each other. No TensorFlow here."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.evaluation.metrics import compute_metrics, prediction_agreement
from patchwork_cli.evaluation.plots import plot_class_histograms, plot_confusion, plot_learning_curve
from patchwork_cli.store import runs
from patchwork_cli.store.config import MULTICLASS
from patchwork_cli.store.duplicate_groups import duplicate_summary
from patchwork_cli.store.label_schema import EXCLUDE, FILEPATH, VALIDATION
from patchwork_cli.store.project import Project
from patchwork_cli.store.run_metrics import Agreement, RunMetrics

log = logging.getLogger("patchwork")
REPORTS_NAME = "reports"
CONFUSION_FILE = "confusion.png"
LEARNING_CURVE_FILE = "learning_curve.png"
# Stop when consecutive runs agree this much on the unlabelled images, over the last two
# pairs of runs: the threshold and window of Bloodgood & Vijay-Shanker 2009 (kappa 0.99, 3 models).
STOP_KAPPA = 0.99
STOP_WINDOW = 2


def _warn_of_split_copies(project: Project, table) -> None:
    copies = duplicate_summary(project.directory, table)
    if copies and copies["split"]:
        log.warning(
            "%d group(s) of copies (duplicates.csv) have images in both training and validation: "
            "the validation figures count images the model was trained on",
            copies["split"],
        )


@dataclass(frozen=True, kw_only=True)
class Plots:
    """The plots evaluate writes: per class and the confusion matrix into `directory`
    (reports/<run>/), the learning curve over all runs beside it."""

    directory: Path
    histograms: list[Path]  # one per class, in the run's order
    confusion: Path | None  # a multiclass run's, on validation rows
    learning_curve: Path


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    run_id: str
    metrics: RunMetrics  # on the current labels
    plots: Plots


def evaluate_run(project: Project, *, run_id: str | None = None) -> Evaluation:
    """A run (LATEST by default) scored on the current labels, its metrics and plots written into
    reports/."""
    directory = runs.resolve_run(project.directory, run_id)
    run = runs.RunRecord.read(directory)
    table = project.labels()
    match = runs.run_match(directory, table[FILEPATH].tolist(), project.directory)
    probabilities = runs.read_run_array(directory, runs.PREDICTIONS_NAME, match)
    missing = [name for name in run.classes if name not in table]
    if missing:
        raise PatchworkError(f"run {directory.name} predicts class {missing[0]!r}, which the project no longer has")
    _warn_of_split_copies(project, table)
    metrics = score_run(
        project,
        previous_run=run_before(project.directory, directory.name),
        classes=run.classes,
        task=run.task,
        probabilities=probabilities,
        table=table,
    )
    out = project.directory / REPORTS_NAME / directory.name
    out.mkdir(parents=True, exist_ok=True)
    metrics.write(out)
    labels = table[run.classes].to_numpy(np.float64)
    validation, exclude = table[VALIDATION].to_numpy(bool), table[EXCLUDE].to_numpy(bool)
    histograms = plot_class_histograms(probabilities, labels, validation, exclude, run.classes, out)
    confusion = None
    if run.task == MULTICLASS:
        confusion = plot_confusion(metrics.validation.multiclass, "validation", out / CONFUSION_FILE)
    learning_curve = plot_learning_curve(run_summaries(project), project.directory / REPORTS_NAME / LEARNING_CURVE_FILE)
    return Evaluation(
        run_id=directory.name,
        metrics=metrics,
        plots=Plots(directory=out, histograms=histograms, confusion=confusion, learning_curve=learning_curve),
    )


def run_summaries(project: Project) -> list[dict]:
    """One row per run, oldest first, from the metrics each run recorded when it was trained."""
    rows = []
    for run_id in runs.list_runs(project.directory):
        directory = runs.models_dir(project.directory) / run_id
        run, metrics = runs.RunRecord.read(directory), RunMetrics.read(directory)
        rows.append(
            {
                "run_id": run_id,
                "labels": run.labelled_images,
                "val_macro_auc": metrics.validation.macro.roc_auc,
                "val_macro_ap": metrics.validation.macro.average_precision,
                "train_macro_auc": metrics.train.macro.roc_auc,
                "kappa": metrics.agreement.kappa if metrics.agreement is not None else None,
            }
        )
    return rows


def score_run(
    project: Project, *, previous_run: str | None, classes: list[str], task: str, probabilities: np.ndarray, table
) -> RunMetrics:
    """A run's metrics on `table`'s labels (its `probabilities` over `classes`, in labels.csv's
    order) and its agreement with run `previous_run`: what train records in the run's
    metrics.json and evaluate in its report."""
    labels = table[classes].to_numpy(np.float64)
    validation, exclude = table[VALIDATION].to_numpy(bool), table[EXCLUDE].to_numpy(bool)
    metrics = compute_metrics(probabilities, labels, validation, exclude, classes, task=task)
    agreement = agreement_with(project, previous_run, classes, probabilities, table, task)
    return dataclasses.replace(metrics, agreement=agreement)


def agreement_with(
    project: Project, previous_id: str | None, classes: list[str], probabilities: np.ndarray, table, task: str
) -> Agreement | None:
    """How much a run (its `probabilities` over `classes`, in labels.csv's order) agrees with run
    `previous_id` on the images that have no label (and are not excluded) in `table`; None
    without a previous run or when its classes differ."""
    if previous_id is None:
        return None
    previous = runs.models_dir(project.directory) / previous_id
    if runs.RunRecord.read(previous).classes != list(classes):
        return None
    before = runs.read_run_array(
        previous, runs.PREDICTIONS_NAME, runs.run_match(previous, table[FILEPATH].tolist(), project.directory)
    )
    unlabelled = np.isnan(table[classes].to_numpy(np.float64)).all(axis=1) & ~table[EXCLUDE].to_numpy(bool)
    kappa = prediction_agreement(probabilities[unlabelled], before[unlabelled], task)
    rows = int((unlabelled & ~np.isnan(probabilities).any(axis=1) & ~np.isnan(before).any(axis=1)).sum())
    return None if kappa is None else Agreement(previous_run=previous_id, kappa=round(kappa, 4), rows=rows)


def run_before(project_dir: Path, run_id: str) -> str | None:
    """The run before `run_id` in the runs' order (by id, as `evaluate --runs` lists them): the
    previous run evaluate compares a run with."""
    earlier = [other for other in runs.list_runs(project_dir) if other < run_id]
    return earlier[-1] if earlier else None


def stopping_hint(project_dir: Path) -> str | None:
    """A line for `status` when the last runs agreed with the ones before them at least STOP_KAPPA
    on the unlabelled images, as each recorded when it was trained (in its metrics.json)."""
    recent = runs.list_runs(project_dir)[-STOP_WINDOW:]
    recorded = [RunMetrics.read(runs.models_dir(project_dir) / run_id).agreement for run_id in recent]
    kappas = [agreement.kappa if agreement is not None else None for agreement in recorded]
    if len(kappas) < STOP_WINDOW or any(k is None or k < STOP_KAPPA for k in kappas):
        return None
    shown = ", ".join(f"{k:.3f}" for k in kappas)
    return (
        f"the last {STOP_WINDOW + 1} runs predict the unlabelled images alike (Cohen's kappa {shown} >= {STOP_KAPPA}): "
        "more labels may change little; check evaluate's validation figures before labelling on"
    )
