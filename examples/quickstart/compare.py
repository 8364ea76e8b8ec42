"""Learning curves of the quickstart's strategies: a table on stdout and a PNG.

    python examples/quickstart/compare.py WORK_DIR TRUTH.csv STRATEGY... [--plot OUT.png]

WORK_DIR/<strategy>/ is a project that ran the active-learning loop (loop.sh). For each
of its runs, oldest first: the training labels it saw, and on the validation rows its
accuracy (the digit with the highest probability is the true one) and macro ROC AUC.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from patchwork_cli.store import runs
from patchwork_cli.store.project import open_project


def true_classes(truth_csv: Path) -> dict[str, int]:
    """File name -> index of its class, from a one-hot truth table."""
    with truth_csv.open(newline="") as handle:
        return {Path(row.pop("filepath")).name: list(row.values()).index("1") for row in csv.DictReader(handle)}


def learning_curve(project_dir: Path, truth: dict[str, int]) -> list[dict]:
    """One point per run: labels, validation accuracy and validation macro ROC AUC."""
    project = open_project(project_dir)
    table = project.labels()
    validation = np.flatnonzero(table["validation"].to_numpy(bool))
    answers = np.array([truth[Path(table["filepath"].iloc[i]).name] for i in validation])
    points = []
    for run_id in runs.list_runs(project.directory):
        directory = runs.models_dir(project.directory) / run_id
        run, metrics = runs.read_json(directory / runs.RUN_FILE), runs.read_json(directory / runs.METRICS_FILE)
        match = runs.run_match(directory, table["filepath"].tolist(), project.directory)
        probabilities = runs.read_run_array(directory, runs.PREDICTIONS_NAME, match)[validation]
        points.append(
            {
                "labels": run["train_rows"],
                "accuracy": float((probabilities.argmax(axis=1) == answers).mean()),
                "macro_auc": metrics["validation"]["macro"]["roc_auc"],
            }
        )
    return points


def format_table(curves: dict[str, list[dict]]) -> str:
    strategies = list(curves)
    lines = ["labels  " + "".join(f"{name + ' acc / AUC':>22}" for name in strategies)]
    for step in range(max(len(points) for points in curves.values())):
        labels = next(points[step]["labels"] for points in curves.values() if step < len(points))
        cells = []
        for name in strategies:
            point = curves[name][step] if step < len(curves[name]) else None
            cells.append(f"{point['accuracy']:>14.3f} / {point['macro_auc']:.3f}" if point else " " * 22)
        lines.append(f"{labels:>6}  " + "".join(cells))
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], out: Path) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    accuracy_axes, auc_axes = figure.subplots(1, 2)
    for name, points in curves.items():
        labels = [p["labels"] for p in points]
        accuracy_axes.plot(labels, [p["accuracy"] for p in points], marker="o", label=name)
        auc_axes.plot(labels, [p["macro_auc"] for p in points], marker="o", label=name)
    for axes, title in ((accuracy_axes, "validation accuracy"), (auc_axes, "validation macro ROC AUC")):
        axes.set_xlabel("training labels")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    figure.suptitle("Active learning on 1,000 handwritten digits (EfficientNet-Lite0 features, linear head)")
    figure.savefig(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("strategies", nargs="+")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    truth = true_classes(args.truth)
    curves = {name: learning_curve(args.work / name, truth) for name in args.strategies}
    print(format_table(curves))
    if args.plot:
        print(f"learning curves: {plot(curves, args.plot)}")


if __name__ == "__main__":
    main()
