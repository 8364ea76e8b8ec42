"""Reduced copies of wide vectors: the rows projected on the principal axes of a sample of them.

Sampling at a million rows cannot hold 1280 float32 values a row (5 GB); it holds the rows'
coordinates on a few principal axes instead. The axes are those of the rows' second moment
(uncentred, a truncated SVD): the subspace that best keeps the rows' inner products, and with
them their distances, so that k-means, k-center and BADGE's gradient distances
(|h1|^2|g1|^2 + |h2|^2|g2|^2 - 2 (h1.h2)(g1.g2)) all read the reduced copy as they read the rows.
"""

from __future__ import annotations

import numpy as np

# Axes kept. Measured on EfficientNet-Lite0's pooled features of real digits (benchmarks/
# active_learning.py's datasets): see docs/ARCHITECTURE.md's scale notes and the README.
REDUCED_WIDTH = 128
# Rows the axes are fitted on: a (d, d) second moment from 20,000 rows is settled to well
# under a percent, and costs O(rows * d^2), where projecting every row costs O(n * d * width).
FIT_ROWS = 20_000
# Chunks of a store such a sample is drawn from, at random: rows spread over every chunk would
# decompress the whole store (a minute at a million rows) to fit on 20,000 of them.
FIT_CHUNKS = 64


def sample_rows(count: int, rng: np.random.Generator, limit: int = FIT_ROWS) -> np.ndarray:
    """At most `limit` of `count` row indices, drawn at random, in order (chunked reads stay sequential)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(rng.choice(count, limit, replace=False))


def sample_from_chunks(chunk_count: int, read_chunk, rng: np.random.Generator) -> np.ndarray:
    """The rows to fit axes on: from each of at most FIT_CHUNKS of `chunk_count` chunks drawn at
    random, an equal share (drawn at random) of FIT_ROWS of the rows `read_chunk(index)` returns
    for it ((n, d) float32, the rows that count), so that no more than a chunk is held beyond them."""
    chunks = sample_rows(chunk_count, rng, FIT_CHUNKS)
    share = -(-FIT_ROWS // max(1, len(chunks)))
    parts = []
    for index in chunks:
        rows = np.asarray(read_chunk(int(index)), dtype=np.float32)
        parts.append(rows[sample_rows(len(rows), rng, share)])
    return np.concatenate(parts)


def principal_axes(sample: np.ndarray, width: int = REDUCED_WIDTH) -> np.ndarray:
    """(d, min(width, d)) float32: the top eigenvectors of the sample's second moment, strongest first."""
    sample = np.asarray(sample, dtype=np.float64)
    _, eigenvectors = np.linalg.eigh(sample.T @ sample)
    return np.ascontiguousarray(eigenvectors[:, ::-1][:, :width], dtype=np.float32)


def project(rows: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(n, width) float32 coordinates of `rows` (n, d) on `axes` (d, width)."""
    return np.asarray(rows, dtype=np.float32) @ axes


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): coverage is measured by cosine distance."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)
