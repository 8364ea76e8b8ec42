"""Out-of-fold probabilities of the labelled rows: what `disagree` ranks their labels by.

A head scores the rows it learnt from by what it memorised: a wrong label it was trained on
comes back agreeing with itself (on 600 labels with 60 flipped, the run's own predictions found
7 of them). So train also splits the labelled rows, training and validation alike, into K folds
(training.label_folds, 5) and predicts each fold with a linear model fitted on the others:
scikit-learn's logistic regression on the standardised pooled features, the model confident
learning is usually run with, a few seconds at a thousand labels where K Keras heads would cost K
trainings. These models only judge labels, so the validation labels may teach them: one model
family for every row keeps the ranking's thresholds comparable (ranked by the run's own
predictions instead, 14 of the top 40 on a small digits project were clean validation labels).
Multiclass: a softmax over the rows with a positive class; multilabel: one binary model per class,
on the rows labelled for it. The run keeps them (runs.OUT_OF_FOLD_FILE) beside their filepaths, so
that `sample --strategy disagree` reads them in no time, matched by filepath.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.runs import OUT_OF_FOLD_FILE
from patchwork_cli.util.chunked import gather_rows

# The logistic regression's inverse regularisation strength. Measured (benchmarks/
# label_quality_bench.py's data: 600 training labels of which 60 flipped and 300 validation
# labels, folds over all 900, 5 seeds; flipped among the top 60 by confident learning), C = 1 /
# 0.1 / 0.01: EfficientNet features of the digits 0.833 / 0.823 / 0.813, of MNIST 0.810 / 0.807 /
# 0.793, the digits' raw pixels 0.813 / 0.900 / 0.863. Choosing C per project by the folds' log
# loss (five values, five times the fits; measured with folds over the training rows alone) did
# no better than the best single value on any of the three.
STRENGTH = 0.1


def write_out_of_fold(directory: Path, inputs) -> int:
    """Fit and write the labelled rows' out-of-fold probabilities into the run `directory`;
    returns the folds used (0: too few rows, or turned off, and nothing written)."""
    rows = np.concatenate([inputs.train_rows, inputs.val_rows])
    folds = min(inputs.config.training.label_folds, len(rows))
    if folds < 2:
        return 0
    x = _standardised(gather_rows(inputs.store.pooled, inputs.feature_rows[rows]))
    labels = inputs.labels[rows]
    fold_of = np.random.default_rng(inputs.seed).permutation(len(rows)) % folds
    if inputs.config.task == "multiclass":
        positive = labels == 1
        target = np.where(positive.any(axis=1), positive.argmax(axis=1), -1)  # -1: negatives only
        p = _out_of_fold(x, target, labels.shape[1], fold_of, folds)
    else:
        targets = np.where(np.isnan(labels), -1, labels).astype(int)
        p = np.column_stack([_out_of_fold(x, t, 2, fold_of, folds)[:, 1] for t in targets.T])
        p[np.isnan(labels)] = np.nan
    filepaths = inputs.table[FILEPATH].take(rows).to_numpy(str)
    with open(directory / OUT_OF_FOLD_FILE, "wb") as handle:
        np.savez(handle, filepaths=filepaths, probabilities=p.astype(np.float32))
    return folds


def _out_of_fold(x: np.ndarray, target: np.ndarray, classes: int, fold_of: np.ndarray, folds: int) -> np.ndarray:
    """(n, classes): each row's probabilities from a model fitted on the other folds' rows with a
    class (target >= 0); a class the model never saw gets probability 0."""
    p = np.full((len(x), classes), 1 / classes)
    for fold in range(folds):
        held, learn = fold_of == fold, (fold_of != fold) & (target >= 0)
        known = np.unique(target[learn])
        if len(known) == 1:
            p[held] = np.eye(classes)[known[0]]
        elif len(known) > 1:
            p[held] = 0
            p[np.ix_(held, known)] = _fit(x[learn], target[learn]).predict_proba(x[held])
    return p


def _standardised(x: np.ndarray) -> np.ndarray:
    """Each feature to zero mean and unit variance (a constant one to 0)."""
    spread = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1)


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs not converged in max_iter: its probabilities are still usable
        return LogisticRegression(C=STRENGTH, max_iter=500).fit(x, y)
