"""Score functions: one number per candidate row from a model's outputs, pure numpy.

`p` is (N, C) sigmoid probabilities, one independent binary output per class
(multi-label), or softmax probabilities where a score takes the task "multiclass";
`labels` is (N, C) with NaN where a class is unlabelled.
"""

from __future__ import annotations

import numpy as np

from patchwork_cli.store.tasks import TASKS


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of each Bernoulli output (1 at p = 0.5, 0 at p = 0 or 1).
    Uncertainty sampling, Lewis & Gale 1994; per class because the outputs are independent sigmoids."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    q = 1.0 - p
    tiny = np.finfo(np.float64).tiny  # 0 * log(tiny) = 0: the limit of p log p at 0, without warnings
    return -(p * np.log2(np.maximum(p, tiny)) + q * np.log2(np.maximum(q, tiny)))


def max_entropy(p: np.ndarray) -> np.ndarray:
    """Uncertainty over all classes: the entropy of the most uncertain class."""
    # Entropy falls as p moves away from 1/2 on either side, so the most uncertain class is
    # the one nearest 1/2: one logarithm per row instead of one per cell.
    distance = np.subtract(p, 0.5, dtype=np.float32)
    return binary_entropy(0.5 - np.abs(distance, out=distance).min(axis=1))


def summed_entropy(p: np.ndarray) -> np.ndarray:
    """Uncertainty over all classes: the sum of the classes' entropies."""
    return binary_entropy(p).sum(axis=1)


def margin(p: np.ndarray, task: str = "multilabel") -> np.ndarray:
    """Margin uncertainty (Scheffer et al. 2001, "Active Hidden Markov Models for Information
    Extraction"): 1 - the gap between the two likeliest outcomes, so higher = more uncertain, in [0, 1].

    multiclass (softmax rows): 1 - (top probability - second probability).
    multilabel (independent sigmoids): a class's two outcomes are p and 1 - p, a gap of |2p - 1|,
    twice its distance to 0.5; the class nearest 0.5 decides: 1 - 2 min_c |p_c - 0.5|."""
    if task == "multiclass":
        top_two = np.partition(np.asarray(p, dtype=np.float32), -2, axis=1)[:, -2:]
        return 1 - (top_two[:, 1] - top_two[:, 0])
    if task == "multilabel":
        distance = np.subtract(p, 0.5, dtype=np.float32)
        return 1 - 2 * np.abs(distance, out=distance).min(axis=1)
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def hard_prediction_gradient(p: np.ndarray, task: str = "multilabel") -> np.ndarray:
    """d(cross-entropy)/d(logits) = p - y, with y the model's own hard prediction: the per-class
    factor of BADGE's gradient embedding (Ash et al. 2020, "Deep Batch Active Learning by
    Diverse, Uncertain Gradient Lower Bounds"). Multilabel: each sigmoid's 0/1 guess (p > 0.5);
    multiclass: the softmax's one-hot argmax, as in BADGE itself."""
    p = np.asarray(p, dtype=np.float32)
    if task == "multiclass":
        return p - (np.arange(p.shape[1]) == p.argmax(axis=1)[:, None])
    return p - (p > 0.5)
