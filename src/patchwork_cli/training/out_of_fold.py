"""Out-of-sample probabilities of the labelled rows: what `disagree` ranks their labels by.

A head scores the rows it learnt from by what it memorised: a wrong label it was trained on
comes back agreeing with itself (on 600 labels with 60 flipped, the run's own predictions found
7 of them). So train also splits the training rows into K folds (training.label_folds, 5) and
predicts each fold with a linear head fitted on the others: scikit-learn's logistic regression on
the standardised pooled features, the model confident learning is usually run with, a few
seconds at a few thousand labels where K Keras heads would cost K trainings. The validation
rows get the same model refitted on every training row: ranked by the run's own predictions
(never trained on them, but another model, often far more confident) 14 of the top 40 on a small
digits project (tests/test_label_errors.py) were clean validation labels and 26 of the 40 wrong
ones were found; with one model for all, 3 and 35. Multiclass: a
softmax over the rows with a positive class; multilabel: one binary model per class, on the rows
labelled for it. The run keeps them (runs.OUT_OF_FOLD_FILE) beside the filepaths they belong to,
so that `sample --strategy disagree` reads them in no time, matched by filepath.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from patchwork_cli.store.runs import OUT_OF_FOLD_FILE
from patchwork_cli.util.chunked import gather_rows

# The logistic regression's inverse regularisation strengths tried; the one whose out-of-fold
# probabilities predict the given labels best (log loss) is kept. A wrong label pulls a weakly
# regularised model towards itself, and how much regularisation is right depends on the
# features. Measured (benchmarks/label_quality_bench.py's data: 600 training labels, 60 flipped,
# 5 seeds; flipped among the top 60 by confident learning), C = 1 / 0.1 / 0.03 / 0.01 / 0.003:
# EfficientNet features of the digits 0.743 / 0.767 / 0.773 / 0.793 / 0.807, of MNIST 0.717 /
# 0.730 / 0.740 / 0.750 / 0.767, the digits' raw pixels 0.813 / 0.870 / 0.900 / 0.873 / 0.820;
# kept by log loss: 0.793, 0.750 and 0.870, within 0.03 of the best on each.
STRENGTHS = (0.1, 0.03, 0.01, 0.003)


def write_out_of_fold(directory: Path, inputs) -> int:
    """Fit and write the out-of-sample probabilities of the training rows (out of fold) and of the
    validation rows (the folds' model refitted on every training row) into the run `directory`;
    returns the folds used (0: too few rows, or turned off, and nothing written)."""
    folds = min(inputs.config.training.label_folds, len(inputs.train_rows))
    if folds < 2:
        return 0
    rows = np.concatenate([inputs.train_rows, inputs.val_rows])
    x = _standardised(gather_rows(inputs.store.pooled, inputs.feature_rows[rows]), len(inputs.train_rows))
    labels = inputs.labels[rows]
    training = np.arange(len(rows)) < len(inputs.train_rows)
    fold_of = np.where(training, np.random.default_rng(inputs.seed).permutation(len(rows)) % folds, -1)
    if inputs.config.task == "multiclass":
        positive = labels == 1
        target = np.where(positive.any(axis=1), positive.argmax(axis=1), -1)  # -1: negatives only
        p = _out_of_sample(x, target, labels.shape[1], fold_of, folds)
    else:
        targets = np.where(np.isnan(labels), -1, labels).astype(int)
        p = np.column_stack([_out_of_sample(x, t, 2, fold_of, folds)[:, 1] for t in targets.T])
        p[np.isnan(labels)] = np.nan
    filepaths = inputs.table["filepath"].take(rows).to_numpy(str)
    with open(directory / OUT_OF_FOLD_FILE, "wb") as handle:
        np.savez(handle, filepaths=filepaths, probabilities=p.astype(np.float32))
    return folds


def _out_of_sample(x: np.ndarray, target: np.ndarray, classes: int, fold_of: np.ndarray, folds: int) -> np.ndarray:
    """(n, classes) probabilities: of each training row (fold_of >= 0) from the folds that held it
    out, each fitted on the other folds' rows with a class (target >= 0), at the strength of
    STRENGTHS whose probabilities give the labelled training rows the lowest log loss; of the other
    rows (validation) from a fit on every training row at that strength."""
    learnable = (target >= 0) & (fold_of >= 0)
    best, best_loss, best_strength = None, np.inf, STRENGTHS[0]
    for strength in STRENGTHS:
        p = np.full((len(x), classes), 1 / classes)
        for fold in range(folds):
            _predict(
                p, x, target, classes, learn=learnable & (fold_of != fold), held=fold_of == fold, strength=strength
            )
        loss = -np.log(np.clip(p[learnable, target[learnable]], 1e-12, 1)).mean() if learnable.any() else 0.0
        if best is None or loss < best_loss:
            best, best_loss, best_strength = p, loss, strength
    _predict(best, x, target, classes, learn=learnable, held=fold_of < 0, strength=best_strength)
    return best


def _predict(p, x, target, classes: int, *, learn: np.ndarray, held: np.ndarray, strength: float) -> None:
    """p[held] from a model fitted on the `learn` rows (the classes it never saw: probability 0)."""
    if not held.any():
        return
    known = np.unique(target[learn])
    if len(known) == 1:
        p[held] = np.eye(classes)[known[0]]
    elif len(known) > 1:
        p[held] = 0
        p[np.ix_(held, known)] = _fit(x[learn], target[learn], strength).predict_proba(x[held])


def _standardised(x: np.ndarray, training: int) -> np.ndarray:
    """Each feature to zero mean and unit variance over the first `training` rows (a constant one to 0)."""
    spread = x[:training].std(axis=0)
    return (x - x[:training].mean(axis=0)) / np.where(spread > 0, spread, 1)


def _fit(x: np.ndarray, y: np.ndarray, strength: float):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs not converged in max_iter: its probabilities are still usable
        return LogisticRegression(C=strength, max_iter=500).fit(x, y)
