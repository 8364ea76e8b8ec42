"""The text tables of `patchwork evaluate` and `patchwork runs`: a run's metrics per class
(validation beside training, a multiclass run's classifier view) and one line per run.
Plain strings, nothing imported but the metrics' own names and record."""

from __future__ import annotations

import dataclasses
import math

from patchwork_cli.evaluation.metrics import PART_TITLES
from patchwork_cli.store.run_metrics import ClassScores, PartScores, RunMetrics

NO_LABELS_HINT = {
    "validation": "no validation labels: mark some labelled images as validation "
    "to measure the model on images it did not learn from",
    "train": "no training labels: label some images that are not validation or excluded",
}


def format_metrics_table(metrics: RunMetrics, threshold: float = 0.5) -> str:
    """Per class and macro: ROC AUC, average precision, F1 and label counts, validation beside training.

    A part without labels is left out of the table and named in a line saying what to do.
    """
    parts = {part: scores for part, scores in metrics.parts().items() if scores.has_labels}
    notes = [NO_LABELS_HINT[part] for part in metrics.parts() if part not in parts]
    if not parts:
        return "\n".join(notes)
    first = next(iter(parts.values()))
    names = list(first.classes)
    name_width = max(len("class"), len("macro"), *(len(n) for n in names))
    columns = (
        ("AUC", lambda s: s.roc_auc, 5),
        ("AP", lambda s: s.average_precision, 5),
        ("F1", lambda s: s.f1, 5),
        ("pos", lambda s: s.positives, 5),
        ("neg", lambda s: s.negatives, 5),
    )
    group_width = sum(w for _, _, w in columns) + 2 * (len(columns) - 1)
    gap = "   "

    header = [" " * name_width + "".join(gap + PART_TITLES[p].ljust(group_width) for p in parts)]
    header.append(" " * name_width + "".join(gap + "-" * group_width for _ in parts))
    header.append(
        "class".ljust(name_width) + "".join(gap + "  ".join(title.rjust(w) for title, _, w in columns) for _ in parts)
    )

    def row(label: str, scores_of) -> str:
        cells = []
        for scores in parts.values():
            values = scores_of(scores)
            cells.append(gap + "  ".join(_cell(value_of(values), w) for _, value_of, w in columns))
        return label.ljust(name_width) + "".join(cells)

    lines = [*notes, *([""] if notes else []), *(line.rstrip() for line in header)]
    for name in names:
        lines.append(row(name, lambda scores, name=name: scores.classes[name]))
    lines.append(row("macro", _macro_with_counts))
    lines.append("")
    lines.append(f"AUC: ROC AUC; AP: average precision; F1 at threshold {threshold:g}; pos/neg: labelled images.")
    lines.append("-: undefined (AUC needs positive and negative labels; AP and F1 need positives).")
    if first.multiclass is not None:
        lines += ["", *_multiclass_lines(parts)]
    agreement = metrics.agreement
    if agreement:
        lines += [
            "",
            f"agreement with run {agreement.previous_run} on {agreement.rows} unlabelled images: "
            f"Cohen's kappa {agreement.kappa:.3f} (runs that stop changing their predictions suggest stopping)",
        ]
    return "\n".join(lines)


def _multiclass_lines(parts: dict[str, PartScores]) -> list[str]:
    """The classifier view of a multiclass run: a headline per part, then validation's (else
    training's) per-class precision and recall and its confusion matrix."""
    lines = []
    for part, scores in parts.items():
        block = scores.multiclass
        lines.append(
            f"{PART_TITLES[part]} as a classifier (top class, {block.rows} rows with one positive): "
            f"accuracy {_cell(block.accuracy, 0).strip()}, macro F1 {_cell(block.macro_f1, 0).strip()}"
        )
    part, scores = next(iter(parts.items()))
    block = scores.multiclass
    if not block.rows:
        return lines
    names = block.confusion.classes
    width = max(len("class"), *(len(name) for name in names))
    lines += ["", f"per class on {PART_TITLES[part]} rows (top class)"]
    lines.append(f"{'class'.ljust(width)}  precision  recall     F1   rows")
    for name, values in block.classes.items():
        cells = (_cell(values.precision, 9), _cell(values.recall, 6), _cell(values.f1, 6))
        lines.append(f"{name.ljust(width)}  {'  '.join(cells)}  {values.rows:>5}")
    matrix = block.confusion.matrix
    column = max(3, *(len(name) for name in names), *(len(str(n)) for row in matrix for n in row))
    lines += ["", f"confusion on {PART_TITLES[part]} rows (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join("  " + name.rjust(column) for name in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(name.ljust(width) + "".join("  " + str(n).rjust(column) for n in row))
    return lines


def _macro_with_counts(scores: PartScores) -> ClassScores:
    """The macro row: the macro scores with the part's label counts summed over the classes."""
    classes = scores.classes.values()
    return ClassScores(
        **dataclasses.asdict(scores.macro),
        positives=sum(c.positives for c in classes),
        negatives=sum(c.negatives for c in classes),
    )


def _cell(value, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = f"{value:.3f}"
    return text.rjust(width)


def runs_table(runs: list[dict]) -> str:
    """One line per run: id, number of labels, validation macro AUC and AP, training macro AUC,
    and the kappa of its predictions on unlabelled images against the run before it."""
    if not runs:
        return "no runs yet: run 'patchwork train' first"
    columns = (
        ("run", "run_id"),
        ("labels", "labels"),
        ("val AUC", "val_macro_auc"),
        ("val AP", "val_macro_ap"),
        ("train AUC", "train_macro_auc"),
        ("kappa vs previous", "kappa"),
    )
    rows = [[_run_cell(run.get(key)) for _, key in columns] for run in runs]
    widths = [max(len(title), *(len(r[i]) for r in rows)) for i, (title, _) in enumerate(columns)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    return "\n".join([line([title for title, _ in columns]), *(line(r) for r in rows)])


def _run_cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
