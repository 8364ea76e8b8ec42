"""`patchwork duplicates`: the images that are copies of one another.

Exact copies have the same pooled features bit for bit (the same pixels at the extractor's
input size: the same file twice, or a lossless re-save). Near copies (re-encoded, resized,
lightly cropped) are pairs whose reduced features (the pooled rows on the store's principal
axes, util/projection.py) have a cosine of at least the threshold. Pairs join into groups
(connected components). Each image's nearest neighbours come from faiss: an exact search up to
EXACT_SEARCH_ROWS rows, an inverted-file index above (a million rows in minutes on 2 cores, where an
exact search would take most of an hour); both stream nothing larger than the reduced copy.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.features import DONE
from patchwork_cli.util.chunked import chunk_groups
from patchwork_cli.util.projection import unit_rows

# On photographs (tests/test_duplicates.py: skimage's, 256x256) a JPEG at quality 70 keeps a
# cosine of 0.946 to its original, a resize to 70% 0.987, a crop of 4% at each border 0.930,
# while distinct photographs reach 0.48 at most. Where we lose: on handwritten digits at 32x32
# (benchmarks/label_quality_bench.py) distinct images reach 0.99, as close as copies: there no
# threshold separates them (recall 0.70-0.76 and precision about 0.5 at 0.90-0.95).
DEFAULT_THRESHOLD = 0.92
EXACT_SEARCH_ROWS = 100_000
PROBES = 16  # inverted lists searched per image


def find_duplicates(project, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """The groups of copies among labels.csv's images with features: columns group, filepath (as
    labels.csv writes it), kind ("exact" when every member has the same features, else "near")."""
    if not 0 < threshold <= 1:
        raise PatchworkError(f"--threshold must be above 0 and at most 1 (a cosine), got {threshold:g}")
    store = project.open_features()
    if store is None:
        raise PatchworkError(
            "features not extracted yet: duplicates are found on the features; run 'patchwork extract'"
        )
    table = project.labels()
    match = store.match(table["filepath"], project.directory)
    rows = np.flatnonzero(store.table_status(match) == DONE)
    store_rows = match.store_rows_of_table()[rows]
    empty = pd.DataFrame({"group": pd.Series(dtype=np.int64), "filepath": [], "kind": []})
    if len(rows) < 2:
        return empty
    digests = _feature_digests(store, store_rows)
    pairs = [_same_digest_pairs(digests), _near_pairs(unit_rows(store.reduced_rows(store_rows)), threshold)]
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
            "filepath": table["filepath"].take(rows[order]).to_numpy(object),
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


def _near_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of unit rows that are each other's nearest row, with a cosine of at least `threshold`.
    Mutual: in a crowd of similar distinct images (handwritten digits at 32x32 reach a cosine of
    0.99), nearest-neighbour links would chain thousands into one group; a copy and its original
    are each other's nearest."""
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
    similarity, neighbour = index.search(vectors, 2)  # itself (or an exact copy), then the nearest other
    # each row's nearest other row: its exact copies tie with it, so the first of the two that is not itself
    first_is_self = neighbour[:, 0] == np.arange(n)
    nearest = np.where(first_is_self, neighbour[:, 1], neighbour[:, 0])
    cosine = np.where(first_is_self, similarity[:, 1], similarity[:, 0])
    rows = np.flatnonzero((nearest >= 0) & (cosine >= threshold))
    mutual = rows[nearest[nearest[rows]] == rows]  # each is the other's nearest: no chains through crowds
    return mutual, nearest[mutual]
