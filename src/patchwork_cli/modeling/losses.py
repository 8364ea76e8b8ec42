"""The losses for partially labelled rows: multi-label (one sigmoid per class) and
multiclass (one softmax over the classes).

Each cell of y_true is 1, 0, or UNLABELLED (-1.0). An unlabelled cell contributes exactly
nothing, to the value and to the gradient; the loss is the sum over labelled cells divided
by the number of labelled cells in the batch (at least 1, so an unlabelled batch gives 0).

`model.output` chooses the per-cell loss on the predicted probability p and target t:
- sigmoid: binary cross-entropy, -t log p - (1 - t) log(1 - p);
- focal:   binary focal loss, -t (1 - p)^gamma log p - (1 - t) p^gamma log(1 - p), which
           down-weights cells the model already gets right. There is no alpha weighting:
           class balance is the job of the stratified batch sampling. gamma = 0 is BCE.
`model.label_smoothing` s applies to both: t = y (1 - s) + s / 2.

A multiclass project (`task: multiclass`) has a softmax output p and one question per
row, answered by a binary event of probability q:
- a row with a 1 at class y (the others 0 or unlabelled): "is it y?", q = p_y, target 1;
  that is categorical cross-entropy, -log p_y;
- a row holding only 0s ("not a dog, not a cat"): "is it one of the classes labelled 0?",
  q = the sum of their probabilities, target 0: -log(1 - q), the loss of "none of these";
- an unlabelled row: nothing.
The per-row loss is the same binary (focal) cross-entropy of q, so label smoothing and
focal loss mean the same as above, and the batch loss is divided by the labelled rows.

The loss is a plain function, not part of the saved model: runs are reloaded with
``load_model(path, compile=False)``.
"""

from __future__ import annotations

from keras import ops

from patchwork_cli.store.config import MULTICLASS, MULTILABEL, ModelConfig

UNLABELLED = -1.0
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] so log() stays finite


def masked_loss(model_config: ModelConfig, task: str = MULTILABEL):
    """A Keras loss `(y_true, y_pred) -> scalar` masking UNLABELLED cells: for sigmoid
    probabilities y_pred, or for softmax ones when `task` is multiclass."""
    smoothing = model_config.label_smoothing
    gamma = model_config.focal_gamma if model_config.output == "focal" else 0.0
    if task == MULTICLASS:
        return _multiclass_loss(smoothing, gamma)

    def masked_cross_entropy(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        probabilities = ops.clip(ops.cast(y_pred, "float32"), EPSILON, 1.0 - EPSILON)
        labelled = ops.greater_equal(y_true, 0.0)
        # Unlabelled cells get a harmless stand-in target so every cell's loss is finite;
        # the final where() then gives them a zero value and an exactly zero gradient
        # (a NaN or inf there would survive as 0 * NaN in the backward pass).
        targets = ops.where(labelled, y_true, 0.0) * (1.0 - smoothing) + smoothing / 2.0
        per_cell = ops.where(labelled, _focal_cross_entropy(targets, probabilities, gamma), 0.0)
        labelled_cells = ops.maximum(1.0, ops.sum(ops.cast(labelled, "float32")))
        return ops.sum(per_cell) / labelled_cells

    return masked_cross_entropy


def _multiclass_loss(smoothing: float, gamma: float):
    def masked_softmax_cross_entropy(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        probabilities = ops.cast(y_pred, "float32")
        positive = ops.cast(ops.equal(y_true, 1.0), "float32")
        negative = ops.cast(ops.equal(y_true, 0.0), "float32")
        has_positive = ops.max(positive, axis=-1) > 0
        labelled = has_positive | (ops.max(negative, axis=-1) > 0)
        # the event each row asks about, and whether the answer is yes (1) or no (0)
        event = ops.where(has_positive, ops.sum(probabilities * positive, -1), ops.sum(probabilities * negative, -1))
        event = ops.clip(event, EPSILON, 1.0 - EPSILON)
        targets = ops.cast(has_positive, "float32") * (1.0 - smoothing) + smoothing / 2.0
        per_row = ops.where(labelled, _focal_cross_entropy(targets, event, gamma), 0.0)
        labelled_rows = ops.maximum(1.0, ops.sum(ops.cast(labelled, "float32")))
        return ops.sum(per_row) / labelled_rows

    return masked_softmax_cross_entropy


def _focal_cross_entropy(targets, probabilities, gamma: float):
    """Per-cell binary focal loss; with gamma = 0 the modulating factors are 1 and this is BCE."""
    positive = targets * ops.power(1.0 - probabilities, gamma) * -ops.log(probabilities)
    negative = (1.0 - targets) * ops.power(probabilities, gamma) * -ops.log(1.0 - probabilities)
    return positive + negative
