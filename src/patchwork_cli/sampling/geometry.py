"""Squared Euclidean distances between candidate rows, given explicitly or implicitly.

Both kinds of point set answer the same two questions (squared distances from every
point to some centres, and the centres' own data), so the diversity selections in
selection.py run unchanged on either. Distances use |a|^2 + |b|^2 - 2 a.b and are
clipped at zero (float rounding can make them slightly negative).
"""

from __future__ import annotations

import numpy as np

# Distance blocks are (N, block) matrices: at most this many cells at a time (64 MiB of float32).
BLOCK_CELLS = 1 << 24


class Points:
    """Rows of an (N, d) matrix: embeddings as they are (coreset)."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.squared_norms = np.einsum("ij,ij->i", self.x, self.x)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows: np.ndarray) -> Points:
        return Points(self.x[rows])

    def squared_distances(self, centres: Points) -> np.ndarray:
        """(N, len(centres)) squared distances."""
        cross = self.x @ centres.x.T
        return _clip(self.squared_norms[:, None] + centres.squared_norms[None, :] - 2 * cross)


class GradientPoints:
    """The rows h_i (x) g_i (outer product flattened, d*C values) of BADGE's gradient
    embedding, kept as the two factors: |h1 g1 - h2 g2|^2 = |h1|^2|g1|^2 + |h2|^2|g2|^2 -
    2 (h1.h2)(g1.g2), so nothing of size N*d*C is ever formed (memory O(N*(d+C)))."""

    def __init__(self, h: np.ndarray, g: np.ndarray):
        self.h = np.ascontiguousarray(h, dtype=np.float32)
        self.g = np.ascontiguousarray(g, dtype=np.float32)
        self.squared_norms = np.einsum("ij,ij->i", self.h, self.h) * np.einsum("ij,ij->i", self.g, self.g)

    def __len__(self) -> int:
        return len(self.h)

    def take(self, rows: np.ndarray) -> GradientPoints:
        return GradientPoints(self.h[rows], self.g[rows])

    def squared_distances(self, centres: GradientPoints) -> np.ndarray:
        cross = (self.h @ centres.h.T) * (self.g @ centres.g.T)
        return _clip(self.squared_norms[:, None] + centres.squared_norms[None, :] - 2 * cross)


def nearest_squared_distance(points, centres) -> np.ndarray:
    """For every point, the squared distance to its nearest centre, a block of centres at a time."""
    nearest = np.full(len(points), np.inf, dtype=np.float32)
    block = max(1, BLOCK_CELLS // max(1, len(points)))
    for start in range(0, len(centres), block):
        distances = points.squared_distances(centres.take(np.arange(start, min(start + block, len(centres)))))
        np.minimum(nearest, distances.min(axis=1), out=nearest)
    return nearest


def _clip(squared: np.ndarray) -> np.ndarray:
    return np.maximum(squared, 0, out=squared)
