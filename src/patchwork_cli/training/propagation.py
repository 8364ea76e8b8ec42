"""Fitting by label propagation (modeling/labelprop.py) instead of a Keras head: no model, no TensorFlow."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.modeling.labelprop import propagate
from patchwork_cli.training.inputs import TrainingInputs
from patchwork_cli.training.prediction import Fitted, run_arrays

log = logging.getLogger("patchwork")


def propagate_labels(inputs: TrainingInputs) -> Fitted:
    """Label propagation (modeling/labelprop.py) over the store's pooled features of every row that has
    them: the training rows are the seeds, the validation rows are only scored. No model, no
    TensorFlow; the run's embeddings are the store's reduced copy of the features its graph joined
    (unit-normalised, on the store's principal axes)."""
    store, config, predicted = inputs.store, inputs.config, inputs.predicted
    if store.needs_pooled():
        raise PatchworkError("the feature store has no pooled copy yet: run 'patchwork extract' once to build it")
    nodes = np.flatnonzero(predicted[: store.rows])  # store rows with features
    position = np.full(store.rows, -1, np.int64)
    position[nodes] = np.arange(len(nodes))
    features = np.asarray(store.pooled.get_orthogonal_selection((nodes,)), dtype=np.float32)
    settings = config.model
    started = time.perf_counter()
    result = propagate(
        features,
        position[inputs.train_store_rows],
        inputs.labels[inputs.train_rows],
        config.task,
        k=settings.labelprop_k,
        iterations=settings.labelprop_iterations,
        alpha=settings.labelprop_alpha,
    )
    seconds = time.perf_counter() - started
    log.info(
        "label propagation over %d rows, k=%d: %d iterations in %.1f s",
        len(nodes),
        result.neighbours,
        len(result.residuals),
        seconds,
    )
    # one history row per conjugate gradient iteration: its largest relative residual as the `loss`
    steps = max(1, len(result.residuals))
    history = {
        "loss": result.residuals or [0.0],
        "seconds": [seconds / steps] * steps,
    }

    def write(staging: Path) -> np.ndarray:
        reduced = store.reduced_rows(nodes)
        probabilities, embeddings = run_arrays(
            staging, len(predicted), store.chunk_rows, reduced.shape[1], len(config.classes)
        )
        full = np.full((len(predicted), len(config.classes)), np.nan, np.float32)
        full[nodes] = result.probabilities
        probabilities[:] = full
        for start in range(0, len(predicted), store.chunk_rows):  # chunk by chunk: one (N, r) copy at most
            stop = min(start + store.chunk_rows, len(predicted))
            block = np.full((stop - start, reduced.shape[1]), np.nan, np.float32)
            inside = (nodes >= start) & (nodes < stop)
            block[nodes[inside] - start] = reduced[inside]
            embeddings[start:stop] = block
        return full

    return Fitted(history, write)
