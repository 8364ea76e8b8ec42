"""`patchwork duplicates`: the images that are copies of one another.

Exact copies have the same pooled features bit for bit (the same pixels at the extractor's
input size: the same file twice, or a lossless re-save). Near copies (re-encoded, resized,
lightly cropped) are found in two steps where the store holds each image's thumbnail (rows
extracted from image files): candidates are each image's CANDIDATES nearest images by its
reduced features (the pooled rows on the store's principal axes, util/projection.py) and by its
thumbnail, and a candidate pair is a copy when its thumbnails correlate by at least the
threshold, allowing a light crop (thumbnail_match.py). Features alone cannot tell a copy from a
similar image (handwritten digits reach a cosine of 0.99 between distinct images); pixels can.
Rows without a thumbnail (imported vectors, rows extracted before stores kept them) pair by
features alone: each other's nearest, with a cosine of at least the feature threshold. Pairs
join into groups (connected components). The nearest neighbours come from faiss: an exact
search up to EXACT_SEARCH_ROWS rows, an inverted-file index above (a million rows in minutes on
2 cores, where an exact search would take most of an hour).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.features import DONE
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.util.chunked import chunk_groups
from patchwork_cli.util.projection import unit_rows

if TYPE_CHECKING:
    from patchwork_cli.store.project import Project

# Thumbnails (benchmarks/label_quality_bench.py's inserted copies of handwritten digits, 30x30):
# JPEG, resized and cropped copies correlate 0.99 and more with their originals once a crop is
# allowed, distinct digits less (at 0.99: digits recall 1.0, pair precision 0.98; MNIST 0.98, 1.0).
DEFAULT_THRESHOLD = 0.99
# Features, for rows without thumbnails: on photographs (tests/test_duplicates.py: skimage's,
# 256x256) a JPEG at quality 70 keeps a cosine of 0.946 to its original, a resize to 70% 0.987, a
# crop of 4% at each border 0.930, while distinct photographs reach 0.48 at most; distinct
# handwritten digits reach 0.99, so no feature threshold separates them.
DEFAULT_FEATURE_THRESHOLD = 0.92
CANDIDATES = 5  # nearest images by features, and by thumbnail, whose pixels are compared
FIRST_TEST = 0.9  # the 8x8 thumbnails' correlation a pair needs before the full test (copies: 0.95 and more)
EXACT_SEARCH_ROWS = 100_000
PROBES = 16  # inverted lists searched per image


def find_duplicates(
    project: Project, threshold: float = DEFAULT_THRESHOLD, feature_threshold: float = DEFAULT_FEATURE_THRESHOLD
) -> pd.DataFrame:
    """The groups of copies among labels.csv's images with features: columns group, filepath (as
    labels.csv writes it), kind ("exact" when every member has the same features, else "near")."""
    for option, value in (("--threshold", threshold), ("--feature-threshold", feature_threshold)):
        if not 0 < value <= 1:
            raise PatchworkError(f"{option} must be above 0 and at most 1 (a similarity), got {value:g}")
    store = project.open_features()
    if store is None:
        raise PatchworkError(
            "features not extracted yet: duplicates are found on the features; run 'patchwork extract'"
        )
    table = project.labels()
    match = store.match(table[FILEPATH], project.directory)
    rows = np.flatnonzero(store.table_status(match) == DONE)
    store_rows = match.store_rows_of_table()[rows]
    empty = pd.DataFrame({"group": pd.Series(dtype=np.int64), "filepath": [], "kind": []})
    if len(rows) < 2:
        return empty
    digests = _feature_digests(store, store_rows)
    with_thumbnail = _has_thumbnail(store, store_rows)
    # one search serves both rules: its first neighbours for the feature rule, all for the candidates
    nearest = _nearest(unit_rows(store.reduced_rows(store_rows)), min(CANDIDATES + 1, len(rows)))
    by_features = _near_pairs(*nearest, feature_threshold)
    either_without = ~(with_thumbnail[by_features[0]] & with_thumbnail[by_features[1]])
    pairs = [_same_digest_pairs(digests), (by_features[0][either_without], by_features[1][either_without])]
    if with_thumbnail.sum() >= 2:
        pairs.append(_pixel_pairs(store, store_rows, nearest[1], with_thumbnail, threshold))
    first, second = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    if not len(first):
        return empty
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(len(rows), len(rows)))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    members = np.flatnonzero(sizes[component] > 1)
    order = members[np.lexsort((members, component[members]))]
    # groups numbered 1, 2, ... in the order of their first image in labels.csv (members is sorted)
    _, first_member = np.unique(component[members], return_index=True)
    number = np.zeros(len(sizes), np.int64)
    number[component[members][np.sort(first_member)]] = np.arange(1, len(first_member) + 1)
    # exact: one distinct digest in the group (counted over (group, digest) pairs, not per group)
    pairs = np.unique(np.column_stack([component[members], digests[members].view(np.int64)]), axis=0)
    exact = np.bincount(pairs[:, 0], minlength=len(sizes)) == 1
    groups = pd.DataFrame(
        {
            "group": number[component[order]],
            "filepath": table[FILEPATH].take(rows[order]).to_numpy(object),
            "kind": np.where(exact[component[order]], "exact", "near"),
        }
    )
    return groups.sort_values(["group", "filepath"], kind="stable", ignore_index=True)


def _feature_digests(store, store_rows: np.ndarray) -> np.ndarray:
    """(n,) uint64: a digest of each row's pooled features, read a chunk at a time."""
    digests = np.zeros(len(store_rows), np.uint64)
    pooled, chunk_rows = store.pooled, store.chunk_rows
    for chunk, positions, offsets in chunk_groups(store_rows, chunk_rows):
        start = chunk * chunk_rows
        block = np.ascontiguousarray(pooled[start : min(start + chunk_rows, pooled.shape[0])], dtype=np.float32)
        for position, offset in zip(positions.tolist(), offsets.tolist(), strict=True):
            digests[position] = int.from_bytes(hashlib.blake2b(block[offset].tobytes(), digest_size=8).digest())
    return digests


def _same_digest_pairs(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row whose digest an earlier row has, paired with the first such row."""
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    earliest = first[inverse]
    copies = np.flatnonzero(earliest != np.arange(len(digests)))
    return earliest[copies], copies


def _has_thumbnail(store, store_rows: np.ndarray) -> np.ndarray:
    """(n,) bool: which rows' images have a thumbnail (their file signature is recorded with it)."""
    if not store.has_image_records:
        return np.zeros(len(store_rows), bool)
    return store.signatures()[store_rows].any(axis=1)


def _pixel_pairs(store, store_rows, feature_neighbours, with_thumbnail, threshold) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows with thumbnails, among each other's CANDIDATES nearest by features
    (`feature_neighbours`, (n, k) over every row) or by thumbnail, whose thumbnails match by at
    least `threshold` (thumbnail_match.py); the 8x8 search vectors' inner product is tested first."""
    from patchwork_cli.evaluation.thumbnail_match import PAIR_BLOCK, pair_similarity, search_vectors

    rows = np.flatnonzero(with_thumbnail)
    thumbnails = store.thumbnails(store_rows[rows])
    small = search_vectors(thumbnails)
    position = np.full(len(store_rows), -1, np.int64)  # a row's place among those with thumbnails
    position[rows] = np.arange(len(rows))
    by_pixels = _nearest(small, min(CANDIDATES + 1, len(rows)))[1]
    by_features = feature_neighbours[rows]
    by_features = np.where(by_features >= 0, position[by_features], -1)  # -1: none, or a row without a thumbnail
    keys = []
    for neighbours in (by_features, by_pixels):
        first = np.repeat(np.arange(len(rows)), neighbours.shape[1])
        second = neighbours.ravel()
        keep = (second >= 0) & (second != first)
        low, high = np.minimum(first[keep], second[keep]), np.maximum(first[keep], second[keep])
        keys.append(low * len(rows) + high)
    pairs = np.unique(np.concatenate(keys))
    first, second = pairs // len(rows), pairs % len(rows)
    alike = np.zeros(len(first), bool)
    for start in range(0, len(first), PAIR_BLOCK):  # ten million pairs of 64 floats at once would be 5 GB
        block = slice(start, start + PAIR_BLOCK)
        alike[block] = np.einsum("ij,ij->i", small[first[block]], small[second[block]]) >= FIRST_TEST
    first, second = first[alike], second[alike]
    similar = pair_similarity(thumbnails, first, second) >= threshold
    return rows[first[similar]], rows[second[similar]]


def _nearest(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, neighbour), each (n, k): every unit row's k nearest rows by inner product
    (itself among them; -1 where an inverted-file search found fewer)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, width = vectors.shape
    if n <= EXACT_SEARCH_ROWS:
        index = faiss.IndexFlatIP(width)
    else:
        lists = int(4 * math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(width), width, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = PROBES
    index.add(vectors)
    return index.search(vectors, k)


def _near_pairs(similarity: np.ndarray, neighbour: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows that are each other's nearest row (from _nearest's `similarity`, `neighbour`),
    with a cosine of at least `threshold`.
    Mutual: in a crowd of similar distinct images (handwritten digits at 32x32 reach a cosine of
    0.99), nearest-neighbour links would chain thousands into one group; a copy and its original
    are each other's nearest."""
    n = len(neighbour)  # each row's first two: itself (or an exact copy), then the nearest other
    # each row's nearest other row: its exact copies tie with it, so the first of the two that is not itself
    first_is_self = neighbour[:, 0] == np.arange(n)
    nearest = np.where(first_is_self, neighbour[:, 1], neighbour[:, 0])
    cosine = np.where(first_is_self, similarity[:, 1], similarity[:, 0])
    rows = np.flatnonzero((nearest >= 0) & (cosine >= threshold))
    mutual = rows[nearest[nearest[rows]] == rows]  # each is the other's nearest: no chains through crowds
    return mutual, nearest[mutual]
