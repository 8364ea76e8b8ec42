"""How alike two images' pixels are, allowing a light crop: the test of a near copy.

Each image has a 32x32 grey thumbnail (util/image_files.py). Two thumbnails are compared by
their correlation (mean removed, unit length: brightness and contrast do not count), and again
with one of them cropped at each border by CROP_FRACTIONS and stretched back to 32x32, both
ways round; the pair scores the best of these. A re-encoded or resized copy correlates 0.99 and
more with its original; a copy cropped by 3-4% at each border correlates about as well with the
original cropped alike, where it does not without the crop. Measured on the copies of
benchmarks/label_quality_bench.py (handwritten digits at 30x30: distinct images of the same digit
correlate up to 0.99 plain) and the photographs of tests/test_duplicates.py.
"""

from __future__ import annotations

import numpy as np

from patchwork_cli.util.image_files import THUMBNAIL_SIDE

CROP_FRACTIONS = (0.015, 0.03, 0.045, 0.06)  # of the side, at each border
PAIR_BLOCK = 8192  # pairs scored at a time: memory stays at a few MB of float32 thumbnails


def _crop_matrix(fraction: float, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(side, side) bilinear resampling of one axis: the centre after cropping `fraction` at each
    end, stretched back to `side` samples (output = matrix @ input, along that axis)."""
    inset = fraction * side
    scale = (side - 2 * inset) / side
    source = inset + (np.arange(side) + 0.5) * scale - 0.5  # where each output sample falls
    low = np.clip(np.floor(source).astype(int), 0, side - 1)
    high = np.clip(low + 1, 0, side - 1)
    weight = np.clip(source - low, 0, 1)
    matrix = np.zeros((side, side))
    matrix[np.arange(side), low] += 1 - weight
    matrix[np.arange(side), high] += weight
    return matrix.astype(np.float32)


_CROPS = np.stack([_crop_matrix(f) for f in CROP_FRACTIONS])  # (crops, side, side)


def _normalised(images: np.ndarray) -> np.ndarray:
    """(n, ...) -> (n, pixels) float32, each row with its mean removed and scaled to unit length
    (a flat image stays all zeros: it matches nothing)."""
    rows = images.reshape(len(images), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def search_vectors(thumbnails: np.ndarray) -> np.ndarray:
    """(n, 64) float32: the thumbnails averaged to 8x8 and normalised, a small vector whose inner
    products rank images by how alike they look (what the nearest-neighbour search reads, and a
    first test of a pair: copies keep 0.95 and more). A block of rows at a time: a million
    thumbnails are 1 GB as uint8, 4 GB as float32."""
    side = THUMBNAIL_SIDE // 8
    out = np.empty((len(thumbnails), 64), np.float32)
    for start in range(0, len(thumbnails), PAIR_BLOCK):
        block = thumbnails[start : start + PAIR_BLOCK].astype(np.float32)
        out[start : start + len(block)] = _normalised(block.reshape(len(block), 8, side, 8, side).mean(axis=(2, 4)))
    return out


def _cropped(images: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """matrix @ image @ matrix.T for each of (n, side, side) `images`, as two large matrix products
    (one per axis) rather than n small ones: 5 times faster."""
    n, side, _ = images.shape
    rows = (images.reshape(n * side, side) @ matrix.T).reshape(n, side, side)  # along each row
    return (rows.transpose(0, 2, 1).reshape(n * side, side) @ matrix.T).reshape(n, side, side).transpose(0, 2, 1)


def pair_similarity(thumbnails: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(pairs,) float32: for each pair (thumbnails[first[i]], thumbnails[second[i]]), the best
    correlation over no crop and each crop of either one (see the module doc).

    Each image is in several pairs (its candidates), so the crops are made once per image and
    direction, not once per pair: the pairs are taken in the order of the image that is cropped."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    best = np.empty(len(first), np.float32)
    for start in range(0, len(first), PAIR_BLOCK):
        a, b = (_normalised(thumbnails[side[start : start + PAIR_BLOCK]]) for side in (first, second))
        best[start : start + PAIR_BLOCK] = np.einsum("ij,ij->i", a, b)
    for cropped_side, plain_side in ((first, second), (second, first)):
        order = np.argsort(cropped_side, kind="stable")
        for start in range(0, len(order), PAIR_BLOCK):
            pairs = order[start : start + PAIR_BLOCK]
            images, which = np.unique(cropped_side[pairs], return_inverse=True)
            originals = thumbnails[images].astype(np.float32)
            plain = _normalised(thumbnails[plain_side[pairs]])
            for crop in _CROPS:
                cropped = _normalised(_cropped(originals, crop))[which]
                best[pairs] = np.maximum(best[pairs], np.einsum("ij,ij->i", cropped, plain))
    return best
