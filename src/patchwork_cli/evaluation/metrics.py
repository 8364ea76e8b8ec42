"""How good is a model: metrics per class and macro-averaged on partly labelled data, a
multiclass run's classifier view, and the agreement of two runs' predictions.

Inputs are arrays over the label table's N rows and C classes:
  probabilities (N, C) predicted probability, NaN where an image has no prediction (no features)
  labels        (N, C) 1 positive, 0 negative, NaN unlabelled
  validation    (N,)   bool, the row is held out for validation
  exclude       (N,)   bool, the row is never used (nor evaluated)

"Training" cells are labelled cells of rows that are neither validation nor excluded;
"validation" cells are labelled cells of validation rows that are not excluded. Each class
is scored on its own labelled cells only, so a partly labelled row still counts for the
classes it has labels for. A multiclass run is scored as a classifier too: its top class
against the one positive of each row that has exactly one (accuracy, macro F1, per-class
precision and recall, a confusion matrix).

The text tables are in evaluation/tables.py, the plots in evaluation/plots.py. No TensorFlow
here, and nothing heavy at import time: scikit-learn is imported inside the functions that
need it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from patchwork_cli.store.config import MULTICLASS, MULTILABEL
from patchwork_cli.store.run_metrics import (
    Classifier,
    ClassifierClass,
    ClassScores,
    Confusion,
    PartScores,
    RunMetrics,
    Scores,
)
from patchwork_cli.store.splits import Parts

PART_TITLES = {"validation": "validation", "train": "training"}
METRICS = tuple(f.name for f in dataclasses.fields(Scores))  # each class's, and the macro means


def compute_metrics(
    probabilities, labels, validation, exclude, classes: list[str], threshold: float = 0.5, task: str = MULTILABEL
) -> RunMetrics:
    """Metrics per class and macro-averaged, on validation and on training cells (the record of
    store/run_metrics.py, with no agreement: that needs the run before, see evaluation.report).

    Plain floats/ints, as a DVC metrics file wants them. A metric that is undefined for a class
    (ROC AUC without both label values, AP/recall/F1 without positives, anything without labelled
    cells) is None; the macro value is the mean over the classes where it is defined (None
    if there are none). Predictions are positive when probability >= threshold.
    A multiclass `task` adds each part's classifier view (see multiclass_metrics).
    """
    probabilities, labels, validation, exclude = check_inputs(probabilities, labels, validation, exclude, classes)
    parts = {}
    for part, rows in part_rows(validation, exclude).items():
        per_class = {}
        for k, name in enumerate(classes):
            y_true, y_score = labelled_cells(probabilities[:, k], labels[:, k], rows)
            per_class[str(name)] = _class_metrics(y_true, y_score, threshold)
        multiclass = multiclass_metrics(probabilities, labels, rows, classes) if task == MULTICLASS else None
        parts[part] = PartScores(macro=_macro(per_class), classes=per_class, multiclass=multiclass)
    return RunMetrics(**parts)


def multiclass_metrics(
    probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray, classes: list[str]
) -> Classifier:
    """The top class against the true one, on the `rows` with exactly one positive and a prediction
    (rows of only 0s say what an image is not, so they have no true class to compare with).

    The confusion matrix's [i][j] counts rows of true class i predicted as j. Precision is 0 for a
    class never predicted; recall and F1 are None for a class without rows, and macro F1 is the
    mean over the classes with rows (None without any).
    """
    positives = labels == 1
    keep = rows & (positives.sum(axis=1) == 1) & np.isfinite(probabilities).all(axis=1)
    true, predicted = positives[keep].argmax(axis=1), probabilities[keep].argmax(axis=1)
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(matrix, (true, predicted), 1)
    per_class = {}
    for k, name in enumerate(classes):
        hits, support, claimed = int(matrix[k, k]), int(matrix[k].sum()), int(matrix[:, k].sum())
        precision = hits / claimed if claimed else 0.0
        recall = hits / support if support else None
        f1 = None if recall is None else (2 * precision * recall / (precision + recall) if hits else 0.0)
        per_class[str(name)] = ClassifierClass(precision=precision, recall=recall, f1=f1, rows=support)
    f1s = [c.f1 for c in per_class.values() if c.f1 is not None]
    return Classifier(
        rows=int(keep.sum()),
        accuracy=float(np.trace(matrix) / keep.sum()) if keep.any() else None,
        macro_f1=float(np.mean(f1s)) if f1s else None,
        classes=per_class,
        confusion=Confusion(classes=[str(name) for name in classes], matrix=matrix.tolist()),
    )


def prediction_agreement(current: np.ndarray, previous: np.ndarray, task: str) -> float | None:
    """Cohen's kappa between two runs' predicted classes on the same rows (NaN rows left out):
    the "stabilizing predictions" stopping rule (Bloodgood & Vijay-Shanker 2009) compares
    consecutive models on unlabelled data. Multiclass: the top class; multilabel: each class's
    p > 0.5, kappa averaged over the classes. None with fewer than two rows to compare."""
    from sklearn.metrics import cohen_kappa_score

    both = ~np.isnan(current).any(axis=1) & ~np.isnan(previous).any(axis=1)
    if both.sum() < 2:
        return None
    current, previous = current[both], previous[both]
    if task == MULTICLASS:
        pairs = [(current.argmax(axis=1), previous.argmax(axis=1))]
    else:
        pairs = [(current[:, k] > 0.5, previous[:, k] > 0.5) for k in range(current.shape[1])]
    # kappa is undefined when both runs predict one class everywhere: identical answers agree fully
    kappas = [1.0 if (a == b).all() else float(cohen_kappa_score(a, b)) for a, b in pairs]
    return float(np.mean(kappas))


def check_inputs(probabilities, labels, validation, exclude, classes):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    validation = np.asarray(validation, dtype=bool)
    exclude = np.asarray(exclude, dtype=bool)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape:
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be (N, C)")
    if probabilities.shape[1] != len(classes):
        raise ValueError(f"{probabilities.shape[1]} probability columns for {len(classes)} classes")
    if validation.shape != (len(labels),) or exclude.shape != (len(labels),):
        raise ValueError(f"validation {validation.shape} and exclude {exclude.shape} must be ({len(labels)},)")
    return probabilities, labels, validation, exclude


def part_rows(validation: np.ndarray, exclude: np.ndarray) -> dict[str, np.ndarray]:
    parts = Parts.from_flags(validation, exclude)
    return {"validation": parts.validation, "train": parts.train}


def labelled_cells(scores: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 labels, probabilities) of the labelled cells of `rows` that have a prediction."""
    keep = rows & ~np.isnan(labels) & np.isfinite(scores)
    return (labels[keep] > 0.5).astype(np.int64), scores[keep]


def _class_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> ClassScores:
    positives, negatives = int(y_true.sum()), int(len(y_true) - y_true.sum())
    out = dict.fromkeys(METRICS)
    out.update(positives=positives, negatives=negatives)
    if not len(y_true):
        return ClassScores(**out)
    from sklearn import metrics as skm

    y_pred = (y_score >= threshold).astype(np.int64)
    out["accuracy"] = skm.accuracy_score(y_true, y_pred)
    # Precision is defined as 0 when nothing is predicted positive (the brief's convention).
    out["precision"] = skm.precision_score(y_true, y_pred, zero_division=0)
    if positives:
        out["average_precision"] = skm.average_precision_score(y_true, y_score)
        out["recall"] = skm.recall_score(y_true, y_pred)
        out["f1"] = skm.f1_score(y_true, y_pred, zero_division=0)
        if negatives:
            out["roc_auc"] = skm.roc_auc_score(y_true, y_score)
    return ClassScores(**{key: _plain(value) for key, value in out.items()})


def _macro(per_class: dict[str, ClassScores]) -> Scores:
    macro = {}
    for key in METRICS:
        values = [getattr(c, key) for c in per_class.values() if getattr(c, key) is not None]
        macro[key] = float(np.mean(values)) if values else None
    return Scores(**macro)


def _plain(value):
    """A JSON/YAML-friendly number: int stays int, finite floats become float, NaN becomes None."""
    if value is None or isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None
