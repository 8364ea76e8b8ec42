"""Label propagation over a k-nearest-neighbour graph of the features (`model.head: labelprop`).

After Iscen, Tolias, Avrithis and Chum, "Label Propagation for Deep Semi-supervised Learning"
(CVPR 2019), section 3.2, on the feature store's pooled vectors:

    affinity   W_ij = max(0, cos(x_i, x_j)) ** gamma  for j among i's k nearest neighbours (not i)
    symmetric  W <- W + W^T
    normalised W_n = D^-1/2 W D^-1/2,  D = diag(W 1)
    solve      (I - alpha W_n) Z = Y   by conjugate gradient, all columns at once
    predict    Z clipped at 0, each row normalised to sum 1

Y holds the seeds, one column per target, each seed's entry divided by its column's seed count
(as in the paper's code), so that a class with many labels does not flood the graph. No
TensorFlow, no model: only numpy and scipy.sparse (which scikit-learn already needs).

The seeds:
- multiclass: a row labelled 1 in class c seeds column c. Rows labelled only 0 ("not a dog,
  not a cat") seed nothing: a negative carries little information for a one-of-C propagation;
- multilabel: two columns per class, its positives and its negatives; the class's probability
  is the positive column's share of the two, row by row.
A row that no seed reaches (a component of the graph without labels) gets equal shares: 1/C
(multiclass) or 0.5 (multilabel).

Cost: exact kNN by chunked brute force (see `knn_graph`) is N^2 d multiply-adds, in blocks whose
similarity matrix is at most BLOCK_BYTES; the graph is a sparse matrix of at most 2 N k entries;
propagation is `iterations` sparse products with (N, columns) matrices. Memory beyond the (N, d)
float32 features themselves is O(N k + N columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchwork_cli.store.config import MULTICLASS
from patchwork_cli.util.projection import unit_rows

GAMMA = 3.0  # the paper's power of the similarities: sharpens the graph towards the closest neighbours
BLOCK_BYTES = 64 * 2**20  # float32 similarities of one block of rows against all rows
TOLERANCE = 1e-6  # conjugate gradient stops early once every column's relative residual is below this


@dataclass
class Propagation:
    probabilities: np.ndarray  # (N, C) float32
    residuals: list[float]  # the largest relative residual over the columns after each iteration
    neighbours: int  # the k actually used (at most N - 1)


def knn_graph(x: np.ndarray, k: int, gamma: float = GAMMA, block_bytes: int = BLOCK_BYTES):
    """The symmetric affinity matrix W + W^T (scipy.sparse CSR, float64) of the k nearest
    neighbours by cosine similarity of the unit rows `x`, each similarity clipped at 0 and raised
    to `gamma`.

    Exact search by brute force, a block of rows against all rows at a time (one matrix product,
    then argpartition for the top k): exact, so the graph and every prediction depend on the
    features only (no index parameters, no randomness); no new dependency (an approximate index
    would need faiss or hnswlib); memory is the block's similarities (twice: argpartition works
    on a copy) plus N k kept entries. The price is N^2 d multiply-adds: the whole propagation of
    1e4 rows of 1280-d took 2.9 s on 2 cores shared with another job (2e3 rows: 0.4 s), so 1e5
    rows take about 5 minutes -- where an approximate index would start to pay.
    """
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        import scipy.sparse

        return scipy.sparse.csr_matrix((n, n)), 0
    block = max(1, min(n, block_bytes // (4 * n)))
    columns = np.empty((n, k), np.int64)
    values = np.empty((n, k), np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        similarity = x[start:stop] @ x.T  # (block, n) float32
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        columns[start:stop] = top
        values[start:stop] = np.take_along_axis(similarity, top, axis=1)
    import scipy.sparse

    weights = np.maximum(values, 0.0) ** gamma
    rows = np.repeat(np.arange(n), k)
    w = scipy.sparse.csr_matrix((weights.ravel(), (rows, columns.ravel())), shape=(n, n))
    return (w + w.T).tocsr(), k


def normalised_affinity(w):
    """D^-1/2 W D^-1/2; a node without any affinity (degree 0) keeps a zero row."""
    import scipy.sparse

    degree = np.asarray(w.sum(axis=1)).ravel()
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    d = scipy.sparse.diags(scale)
    return (d @ w @ d).tocsr()


def conjugate_gradient(w_n, y: np.ndarray, alpha: float, iterations: int, tolerance: float = TOLERANCE):
    """Solve (I - alpha W_n) Z = Y for every column of Y at once by conjugate gradient (the matrix
    is symmetric positive definite for alpha < 1, as the eigenvalues of W_n lie in [-1, 1]).
    At most `iterations` steps; stops when every column's residual is below `tolerance` times its
    norm. Returns Z and the largest relative residual after each step."""
    y = np.asarray(y, np.float64)
    scale = np.linalg.norm(y, axis=0)
    scale[scale == 0] = 1.0
    z = np.zeros_like(y)
    r = y.copy()
    p = r.copy()
    rr = (r * r).sum(axis=0)
    residuals = []
    for _ in range(iterations):
        if (np.sqrt(rr) / scale).max() <= tolerance:
            break
        ap = p - alpha * (w_n @ p)
        pap = (p * ap).sum(axis=0)
        step = np.divide(rr, pap, out=np.zeros_like(rr), where=pap > 0)
        z += step * p
        r -= step * ap
        rr_next = (r * r).sum(axis=0)
        beta = np.divide(rr_next, rr, out=np.zeros_like(rr), where=rr > 0)
        p = r + beta * p
        rr = rr_next
        residuals.append(float((np.sqrt(rr) / scale).max()))
    return z, residuals


def seed_matrix(labels: np.ndarray, task: str) -> np.ndarray:
    """Y (n, columns) of the seed rows' `labels` (n, C; NaN unlabelled): multiclass, one column
    per class (its 1s); multilabel, two per class (its 1s, then its 0s). Each column's seeds
    share a total of 1."""
    if task == MULTICLASS:
        y = (labels == 1).astype(np.float64)
    else:
        y = np.concatenate([(labels == 1), (labels == 0)], axis=1).astype(np.float64)
    counts = y.sum(axis=0)
    return y / np.where(counts > 0, counts, 1.0)


def probabilities_from(z: np.ndarray, classes: int, task: str) -> np.ndarray:
    """Class probabilities from the propagated scores: Z clipped at 0 and normalised per row
    (multiclass), or each class's positive share of its positive and negative columns."""
    z = np.maximum(z, 0.0)
    if task == MULTICLASS:
        total = z.sum(axis=1, keepdims=True)
        return np.where(total > 0, z / np.where(total > 0, total, 1.0), 1.0 / classes).astype(np.float32)
    positive, negative = z[:, :classes], z[:, classes:]
    total = positive + negative
    return np.where(total > 0, positive / np.where(total > 0, total, 1.0), 0.5).astype(np.float32)


def propagate(
    features: np.ndarray,
    seeds: np.ndarray,
    seed_labels: np.ndarray,
    task: str,
    k: int = 10,
    iterations: int = 20,
    alpha: float = 0.99,
    gamma: float = GAMMA,
) -> Propagation:
    """Probabilities (N, C) for every row of `features` (N, d), propagated from the rows `seeds`
    (indices into features) labelled `seed_labels` (len(seeds), C; NaN unlabelled)."""
    x = unit_rows(features)
    w, used = knn_graph(x, k, gamma)
    w_n = normalised_affinity(w)
    classes = seed_labels.shape[1]
    y = np.zeros((len(x), classes if task == MULTICLASS else 2 * classes))
    np.add.at(y, np.asarray(seeds, np.int64), seed_matrix(np.asarray(seed_labels, np.float64), task))
    z, residuals = conjugate_gradient(w_n, y, alpha, iterations)
    return Propagation(probabilities_from(z, classes, task), residuals, used)
