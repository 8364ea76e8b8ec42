"""Which labels are likely wrong: confident learning (Northcutt, Jiang & Chuang 2021, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR 70) on out-of-sample probabilities.

For each class j, a threshold t_j: the mean probability of j over the rows labelled j (the
model's self-confidence on that class). A row is confidently of class j when p_j >= t_j (the
highest such j when several are). Counting labelled class against confident class gives the
confident joint; calibrated to the label counts and normalised, its off-diagonal cell (i, j)
estimates the share of rows labelled i that are really j. That many rows labelled i are flagged,
those whose margin p_j - p_i is largest (the paper's prune-by-noise-rate), and the flagged rows
are ranked by their self-confidence p_label, lowest first; the rows not flagged follow in the
same order. cleanlab implements the same method; it is not a dependency because its licence
(AGPL-3.0) does not fit an MIT tool (benchmarks/label_quality_bench.py compares the two).

Pure numpy: `sample` and `label` rank with it without TensorFlow or scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranking:
    """Per row: how unlikely its label is (1 - self-confidence), whether confident learning
    flags it, and the class the probabilities suggest."""

    score: np.ndarray  # (n,) float64, 1 - p(given label)
    flagged: np.ndarray  # (n,) bool
    suggested: np.ndarray  # (n,) int, the class the probabilities suggest

    def order(self) -> np.ndarray:
        """Row indices, flagged rows first, each part by score, highest first (stable)."""
        return np.lexsort((-self.score, ~self.flagged))


def rank_multiclass(labels: np.ndarray, p: np.ndarray) -> Ranking:
    """`labels` (n,) class indices given by the person, `p` (n, K) out-of-sample probabilities."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    n, classes = p.shape
    rows = np.arange(n)
    self_confidence = p[rows, labels]
    flagged = np.zeros(n, bool)
    if n:
        confident = _confident_class(labels, p)
        joint = _calibrated_joint(labels, confident, classes)
        for given in range(classes):
            of_given = np.flatnonzero(labels == given)
            for true in range(classes):
                count = int(round(joint[given, true] * n)) if true != given else 0
                if count <= 0:
                    continue
                margin = p[of_given, true] - p[of_given, given]
                flagged[of_given[np.argsort(-margin, kind="stable")[:count]]] = True
    return Ranking(score=1 - self_confidence, flagged=flagged, suggested=p.argmax(axis=1))


def rank_binary(labels: np.ndarray, p: np.ndarray) -> Ranking:
    """One class's 0/1 labels against its probability of 1: confident learning on two classes."""
    p = np.asarray(p, dtype=np.float64)
    return rank_multiclass(np.asarray(labels, dtype=np.int64), np.stack([1 - p, p], axis=1))


def _confident_class(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's confident class (-1: above no class's threshold)."""
    classes = p.shape[1]
    thresholds = np.full(classes, np.inf)
    for j in range(classes):
        mine = labels == j
        if mine.any():
            thresholds[j] = p[mine, j].mean()
    above = p >= thresholds
    confident = np.where(above, p, -np.inf).argmax(axis=1)
    return np.where(above.any(axis=1), confident, -1)


def _calibrated_joint(labels: np.ndarray, confident: np.ndarray, classes: int) -> np.ndarray:
    """The confident joint with each labelled class's row scaled to that class's count, as a
    distribution over (given, true) pairs (eq. 2-3 of the paper)."""
    counted = confident >= 0
    joint = np.zeros((classes, classes))
    np.add.at(joint, (labels[counted], confident[counted]), 1)
    label_counts = np.bincount(labels, minlength=classes).astype(np.float64)
    row_sums = joint.sum(axis=1)
    scale = np.divide(label_counts, row_sums, out=np.zeros(classes), where=row_sums > 0)
    joint *= scale[:, None]
    total = joint.sum()
    return joint / total if total else joint
