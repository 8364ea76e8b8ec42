"""What `patchwork evaluate` does with a run: score it on the current labels, draw the
plots into reports/, and line runs up against each other. No TensorFlow here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import runs
from .errors import PatchworkError
from .config import MULTICLASS, MULTILABEL
from .evaluation import compute_metrics, plot_class_histograms, plot_confusion, plot_learning_curve
from .project import Project

REPORTS_NAME = "reports"
CONFUSION_FILE = "confusion.png"


def evaluate_run(project: Project, run_id: str | None = None) -> tuple[str, dict, list[Path]]:
    """(run id, metrics on the current labels, the plots written) for a run (LATEST by default):
    the class histograms, a multiclass run's confusion.png (on validation rows), and last the
    learning curve."""
    directory = runs.resolve_run(project.directory, run_id)
    run = runs.read_json(directory / runs.RUN_FILE)
    table = project.labels()
    match = runs.run_match(directory, table["filepath"].tolist(), project.directory)
    probabilities = runs.read_run_array(directory, runs.PREDICTIONS_NAME, match)
    missing = [name for name in run["classes"] if name not in table]
    if missing:
        raise PatchworkError(f"run {directory.name} predicts class {missing[0]!r}, which the project no longer has")
    labels = table[run["classes"]].to_numpy(np.float64)
    validation, exclude = table["validation"].to_numpy(bool), table["exclude"].to_numpy(bool)
    task = run.get("task", MULTILABEL)  # runs from before the task key are multilabel
    metrics = compute_metrics(probabilities, labels, validation, exclude, run["classes"], task=task)
    out = project.directory / REPORTS_NAME / directory.name
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / "metrics.json", metrics)
    plots = plot_class_histograms(probabilities, labels, validation, exclude, run["classes"], out)
    if task == MULTICLASS:
        plots.append(plot_confusion(metrics["validation"]["multiclass"], "validation", out / CONFUSION_FILE))
    plots.append(plot_learning_curve(run_summaries(project), project.directory / REPORTS_NAME / "learning_curve.png"))
    return directory.name, metrics, plots


def run_summaries(project: Project) -> list[dict]:
    """One row per run, oldest first, from the metrics each run recorded when it was trained."""
    rows = []
    for run_id in runs.list_runs(project.directory):
        directory = runs.models_dir(project.directory) / run_id
        run, metrics = runs.read_json(directory / runs.RUN_FILE), runs.read_json(directory / runs.METRICS_FILE)
        rows.append(
            {
                "run_id": run_id,
                "labels": run["labelled_images"],
                "val_macro_auc": metrics["validation"]["macro"]["roc_auc"],
                "val_macro_ap": metrics["validation"]["macro"]["average_precision"],
                "train_macro_auc": metrics["train"]["macro"]["roc_auc"],
            }
        )
    return rows
