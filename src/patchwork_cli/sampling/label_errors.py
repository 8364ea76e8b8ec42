"""`disagree`: the labelled rows ranked by how likely their label is wrong, and what to say of each.

The probabilities are out-of-sample (sample.py gives the rows labelled at train time their
out-of-fold predictions, the run's own for rows labelled since), ranked by confident learning
(confident_learning.py). Multiclass:
a row with a positive class is ranked among the classes; a row holding only negatives ("not a
cat") by its most probable denied class. Multilabel: each class on its own, over the rows
labelled for it; a row is as doubtful as its most doubtful class.
"""

from __future__ import annotations

import numpy as np

from patchwork_cli.sampling.confident_learning import Ranking, rank_binary, rank_multiclass


def rank_labels(p: np.ndarray, labels: np.ndarray, task: str) -> Ranking:
    """`p` (n, C) out-of-sample probabilities of n labelled rows, `labels` (n, C) their cells (NaN
    unlabelled). Multiclass suggestions are class indices; multilabel ones, the doubtful class's."""
    if task == "multiclass":
        return _multiclass(p, labels)
    flagged = np.zeros(len(labels), bool)
    for k in range(labels.shape[1]):
        mine = np.flatnonzero(~np.isnan(labels[:, k]))
        flagged[mine] |= rank_binary(labels[mine, k], p[mine, k]).flagged
    scores = _class_doubts(p, labels)
    return Ranking(score=scores.max(axis=1), flagged=flagged, suggested=scores.argmax(axis=1))


def _class_doubts(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, C) multilabel: 1 - the probability of each class's label (|p - label|), -inf where the
    row holds no label for the class; rank_binary's score, class by class."""
    return np.where(np.isnan(labels), -np.inf, np.abs(np.asarray(p, np.float64) - np.nan_to_num(labels)))


def _multiclass(p: np.ndarray, labels: np.ndarray) -> Ranking:
    positive = labels == 1
    with_class = positive.any(axis=1)
    score = np.where(labels == 0, p, -np.inf).max(axis=1)  # rows of negatives only: the denied class's p
    flagged = np.zeros(len(labels), bool)
    if with_class.any():
        ranked = rank_multiclass(positive[with_class].argmax(axis=1), p[with_class])
        score[with_class], flagged[with_class] = ranked.score, ranked.flagged
    return Ranking(score=score, flagged=flagged, suggested=p.argmax(axis=1))


def describe(p: np.ndarray, labels: np.ndarray, task: str, classes: list[str]) -> tuple[list[str], list[str]]:
    """Each row's label as given and as the probabilities suggest it: "cat" and "dog" (multiclass;
    "not cat" for a row of negatives), "cat=1" and "cat=0" for the doubtful class (multilabel)."""
    given, suggested = [], []
    doubtful = _class_doubts(p, labels).argmax(axis=1) if task == "multilabel" else None
    for i, cells in enumerate(labels):
        if doubtful is not None:
            k = int(doubtful[i])
            given.append(f"{classes[k]}={int(cells[k])}")
            suggested.append(f"{classes[k]}={int(p[i, k] >= 0.5)}")
            continue
        positive = np.flatnonzero(cells == 1)
        if len(positive):
            given.append(classes[positive[0]])
        else:
            denied = np.flatnonzero(cells == 0)
            given.append("not " + classes[denied[np.argmax(p[i, denied])]])
        suggested.append(classes[int(np.argmax(p[i]))])
    return given, suggested


def parse_suggestion(text: str, classes: list[str]) -> tuple[str, int]:
    """describe()'s suggested label as (class, value): "dog" -> ("dog", 1), "cat=0" -> ("cat", 0);
    a class's own name first, so that a class named "size=1" is that class."""
    name, equals, value = text.rpartition("=")
    return (name, int(value)) if text not in classes and equals and value in ("0", "1") else (text, 1)
