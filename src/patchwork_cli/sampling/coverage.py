"""Coverage strategies for a cold start: rows that cover the feature space, chosen with no model.

Both take the candidates' extracted features (pooled and L2-normalised, (n, d) float32) and
`seen`, the features of the labelled rows that are not candidates, which count as covered
already. Both stay near-linear in n: no (n, n) matrix; distances are computed a block at a
time against a sample of bounded size. Each returns (indices into the candidates in the order
chosen, the score that chose each), like the selections in selection.py.

scikit-learn is imported inside the functions: it takes about two seconds to import, which
the other strategies (and every other command) should not pay.
"""

from __future__ import annotations

import math

import numpy as np

from patchwork_cli.sampling.geometry import BLOCK_CELLS, Points

# Rows probcover's projection is fitted on: plenty for a few dozen principal axes; fitting
# costs O(rows * d^2), where projecting every row costs O(n * d * dimensions).
PCA_FIT_ROWS = 20_000
# Mini-batch k-means batch: fast at 200,000 x 1280 on two cores (scikit-learn advises at least
# 256 per core); full k-means, which the paper's code runs up to 50 clusters, takes minutes there.
KMEANS_BATCH = 2048
# probcover's pseudo-labels when the number of classes is not given (the paper's CIFAR-10 count).
PSEUDO_CLASSES = 10


def typiclust(
    features: np.ndarray,
    k: int,
    rng: np.random.Generator,
    seen: np.ndarray | None = None,
    *,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    neighbours: int = 20,
    neighbour_sample: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust (Hacohen et al. 2022, "Active Learning on a Budget: Opposite Strategies Suit High
    and Low Budgets", TPC-RP): k-means into len(seen) + k clusters, at most `max_clusters` (500,
    as the paper's code), then one pick per cluster: clusters holding the fewest labelled rows
    first (those with none, while there are any), the largest first among equals; round-robin
    over them when k exceeds their number. Each pick is the most typical candidate of its
    cluster not taken yet (see `typicality`; `neighbours` = 20 is the paper's K). Clusters of at
    most `min_cluster_size` (5) rows are outliers the paper's code never picks from; here only
    when the others hold fewer than k candidates.

    Differences from the paper's code, for scale: k-means is mini-batch at every size, fitted on
    the candidates (the labelled rows are assigned to its clusters afterwards); each cluster's
    typicality is computed once, with neighbours among at most `neighbour_sample` of its
    candidates. The score is the pick's typicality."""
    features = np.asarray(features, dtype=np.float32)
    k = min(k, len(features))
    if k == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    seen_count = 0 if seen is None else len(seen)
    kmeans = _kmeans(features, min(seen_count + k, max_clusters, len(features)), rng)
    clusters = kmeans.n_clusters
    candidates = np.bincount(kmeans.labels_, minlength=clusters)
    if seen_count:
        labelled = np.bincount(kmeans.predict(np.asarray(seen, dtype=np.float32)), minlength=clusters)
    else:
        labelled = np.zeros_like(candidates)
    members = np.split(np.argsort(kmeans.labels_, kind="stable"), np.cumsum(candidates)[:-1])
    visits = _round_robin(_cluster_order(candidates, labelled, k, min_cluster_size), candidates, k)
    ranked = {}  # cluster -> (its candidates, most typical first; their typicality)
    for cluster in dict.fromkeys(visits):
        rows = members[cluster]
        scores = typicality(features[rows], rng, neighbours=neighbours, neighbour_sample=neighbour_sample)
        order = np.argsort(-scores, kind="stable")
        ranked[cluster] = rows[order], scores[order]
    taken = dict.fromkeys(ranked, 0)
    chosen, chosen_scores = [], []
    for cluster in visits:
        rows, scores = ranked[cluster]
        chosen.append(rows[taken[cluster]])
        chosen_scores.append(scores[taken[cluster]])
        taken[cluster] += 1
    return np.array(chosen, dtype=np.int64), np.array(chosen_scores, dtype=np.float64)


def typicality(
    x: np.ndarray, rng: np.random.Generator, *, neighbours: int = 20, neighbour_sample: int = 1000
) -> np.ndarray:
    """TypiClust's typicality of each row of `x`: 1 / (mean Euclidean distance to its K nearest
    other rows + 1e-5), K = `neighbours`, at most half the rows (the paper's code, for small
    clusters). The neighbours are looked for among at most `neighbour_sample` rows drawn at random
    (all of them when there are fewer; K then below the sample's size), so the cost is
    O(len(x) * neighbour_sample * d), not quadratic; in a larger cluster that is a smoother
    density estimate (as if K were larger)."""
    count = len(x)
    if count > neighbour_sample:
        sample = np.sort(rng.choice(count, neighbour_sample, replace=False))
    else:
        sample = np.arange(count)
    # One K for every row, so that their typicalities compare: a sampled row has one reference fewer.
    nearest = max(1, min(neighbours, count // 2, len(sample) - 1))
    references = Points(x[sample])
    # A sampled row is not its own neighbour: the column of its zero distance, -1 for the others.
    own_column = np.full(count, -1)
    own_column[sample] = np.arange(len(sample))
    mean_distance = np.empty(count, dtype=np.float64)
    for rows in _blocks(count, len(sample)):
        squared = Points(x[rows]).squared_distances(references)
        own = own_column[rows]
        sampled = np.flatnonzero(own >= 0)
        squared[sampled, own[sampled]] = np.inf  # a lone row's only distance: typicality 0
        closest = np.partition(squared, nearest - 1, axis=1)[:, :nearest]
        mean_distance[rows] = np.sqrt(closest).mean(axis=1)
    return 1 / (mean_distance + 1e-5)


def probcover(
    features: np.ndarray,
    k: int,
    rng: np.random.Generator,
    seen: np.ndarray | None = None,
    *,
    delta: float | None = None,
    alpha: float = 0.95,
    pseudo_classes: int = PSEUDO_CLASSES,
    dimensions: int = 32,
    sample_size: int = 20_000,
    purity_queries: int = 2_000,
) -> tuple[np.ndarray, np.ndarray]:
    """ProbCover (Yehuda et al. 2022, "Active Learning Through a Covering Lens"): greedy maximum
    coverage with the balls B(x) = {x' : |x - x'| < delta}. Each pick is the candidate whose ball
    holds the most rows not covered yet; the balls of the labelled rows (`seen`) cover theirs from
    the start. `delta` None takes the paper's purity rule (see `purity_radius`): the largest delta
    for which at least `alpha` = 0.95 of the balls are pure with respect to k-means pseudo-labels,
    `pseudo_classes` clusters (the paper: the number of classes; at least 2).

    Near-linear where the paper builds the ball graph of all pairs:
    - distances are measured after PCA to `dimensions` = 32 axes (fitted on a sample of rows):
      a distance costs 40 times less than in 1280-d, and delta is chosen in that same space;
    - delta comes from the whole pool: `purity_queries` = 2,000 balls drawn at random, each
      against every row (O(n * purity_queries));
    - the greedy runs on `sample_size` = 20,000 candidates drawn at random (all of them in a
      smaller pool), as centres and as the rows to cover, with the pool's delta: the share of
      the sample covered estimates the share of the pool covered, the paper's objective, to
      within about 1/sqrt(sample_size) < 1%, and all its pairs are 4e8 distances, computed a
      block at a time and never stored (see `_greedy_cover`).
    Once everything is covered with picks still to make, covering starts again with only the
    picks themselves covered (a second layer), rather than handing out rows that gain nothing.
    The score is a pick's gain: the estimated number of candidates it newly covers."""
    features = np.asarray(features, dtype=np.float32)
    k = min(k, len(features))
    if k == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    seen = np.empty((0, features.shape[1]), np.float32) if seen is None else np.asarray(seen, dtype=np.float32)
    points, seen_points = _project(features, seen, dimensions, rng)
    if delta is None:
        everyone = np.concatenate([points, seen_points])
        groups = min(max(pseudo_classes, 2), len(everyone))  # one pseudo-class would make every ball pure
        pseudo_labels = _kmeans(everyone, groups, rng).labels_
        queries = rng.choice(len(everyone), min(purity_queries, len(everyone)), replace=False)
        delta = purity_radius(everyone, pseudo_labels, alpha, queries)
    if len(points) > sample_size:
        sample = np.sort(rng.choice(len(points), sample_size, replace=False))
    else:
        sample = np.arange(len(points))
    picks, gains = _greedy_cover(points[sample], seen_points, k, delta)
    return sample[picks], gains * len(points) / len(sample)


def purity_radius(
    points: np.ndarray, pseudo_labels: np.ndarray, alpha: float = 0.95, queries: np.ndarray | None = None
) -> float:
    """ProbCover's radius (Yehuda et al. 2022): the largest delta for which at least `alpha` of
    the balls {x' : |x - x'| < delta} are pure (hold rows of one pseudo-label). A ball is pure
    exactly when delta <= the distance from its centre to the nearest row of another label, so
    the answer is a quantile of that distance, no search over deltas needed. `queries`: the
    centres to measure purity on (row indices; None = every row), each against every row."""
    queries = np.arange(len(points)) if queries is None else np.asarray(queries)
    left, right = _lift(np.asarray(points, dtype=np.float32))
    centres, centre_labels = right[queries].T, pseudo_labels[queries]
    nearest_other = np.full(len(queries), np.inf, dtype=np.float32)
    for rows in _blocks(len(points), len(queries)):
        squared = left[rows] @ centres
        np.putmask(squared, pseudo_labels[rows][:, None] == centre_labels[None, :], np.inf)
        np.minimum(nearest_other, squared.min(axis=0), out=nearest_other)
    # purity(delta) = share of centres with nearest_other >= delta; the largest delta keeping
    # ceil(alpha * q) of the q centres is the ceil(alpha * q)-th largest of those distances.
    keep = math.ceil(alpha * len(queries))
    return float(np.sqrt(max(np.sort(nearest_other)[len(queries) - keep], 0)))


def _greedy_cover(points: np.ndarray, seen: np.ndarray, k: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """ProbCover's greedy over `points`, as centres and as the rows to cover: (picks, their gains).
    The ball graph is never stored: the gains are counted once, and each newly covered row is
    taken off the gains of the balls that hold it (the balls around it: the graph is symmetric),
    so a layer of covering costs one pass over all pairs, in memory linear in the points."""
    squared_radius = np.float32(radius) ** 2
    left, right = _lift(points)
    seen_left, _ = _lift(seen)
    covered = np.zeros(len(points), dtype=bool)
    for rows in _blocks(len(seen), len(points)):  # the labelled rows' balls
        covered |= (seen_left[rows] @ right.T < squared_radius).any(axis=0)
    gain = _ball_counts(left, right[~covered], squared_radius)
    ball_sizes = None  # counted at the first new layer
    available = np.ones(len(points), dtype=bool)
    chosen, gains = [], []
    for _ in range(k):
        if gain[available].max() <= 0:  # everything covered: a new layer, covered only by the picks
            ball_sizes = _ball_counts(left, right, squared_radius) if ball_sizes is None else ball_sizes
            covered = ~available
            gain = ball_sizes - _ball_counts(left, right[covered], squared_radius)
        pick = int(np.argmax(np.where(available, gain, -1)))
        chosen.append(pick)
        gains.append(gain[pick])
        newly = ~covered & (right @ left[pick] < squared_radius)
        covered |= newly
        gain -= _ball_counts(left, right[newly], squared_radius)
        available[pick] = False
    return np.array(chosen, dtype=np.int64), np.array(gains, dtype=np.float64)


def _ball_counts(left: np.ndarray, references: np.ndarray, squared_radius: np.float32) -> np.ndarray:
    """For each lifted row, how many (lifted) references lie in its ball."""
    counts = np.zeros(len(left), dtype=np.int64)
    if len(references):
        for rows in _blocks(len(left), len(references)):
            counts[rows] = np.count_nonzero(left[rows] @ references.T < squared_radius, axis=1)
    return counts


def _lift(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows lifted so that one matrix product gives squared distances, with no pass over the
    product to add the norms: [x, |x|^2, 1] . [-2y, 1, |y|^2] = |x - y|^2 (left, right)."""
    squared_norms = np.einsum("ij,ij->i", x, x)[:, None]
    ones = np.ones_like(squared_norms)
    return np.hstack([x, squared_norms, ones]), np.hstack([-2 * x, ones, squared_norms])


def _project(
    features: np.ndarray, seen: np.ndarray, dimensions: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The rows and the labelled rows on the top `dimensions` principal axes of up to PCA_FIT_ROWS
    candidates drawn at random; as they are when they have no more dimensions than that."""
    if features.shape[1] <= dimensions:
        return features, seen
    fit_rows = features[np.sort(rng.choice(len(features), min(len(features), PCA_FIT_ROWS), replace=False))]
    mean = fit_rows.mean(axis=0)
    centred = fit_rows - mean
    # The covariance's top eigenvectors: PCA in half a second, where scikit-learn's PCA takes four.
    _, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    axes = eigenvectors[:, ::-1][:, :dimensions].astype(np.float32)
    offset = mean @ axes  # (x - mean) @ axes without a centred copy of x
    return features @ axes - offset, seen @ axes - offset


def _kmeans(x: np.ndarray, clusters: int, rng: np.random.Generator):
    """Mini-batch k-means (Sculley 2010) of the rows of x, seeded by k-means++ on a sample."""
    from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus

    # The seeding runs on a float64 copy of the sample: on float32 rows scikit-learn upcasts
    # them block by block at every step, 20 s for 200 clusters of 1280-d rows.
    sample = x[np.sort(rng.choice(len(x), min(len(x), 3 * KMEANS_BATCH), replace=False))].astype(np.float64)
    centres, _ = kmeans_plusplus(sample, clusters, random_state=_seed(rng))
    kmeans = MiniBatchKMeans(
        n_clusters=clusters, init=centres.astype(x.dtype), n_init=1, batch_size=KMEANS_BATCH, random_state=_seed(rng)
    )
    return kmeans.fit(x)


def _cluster_order(candidates: np.ndarray, labelled: np.ndarray, k: int, min_cluster_size: int) -> np.ndarray:
    """The clusters TypiClust visits, in order: fewest labelled rows first, then largest first
    (the earlier cluster on ties); the outliers left out unless the rest hold fewer than k candidates."""
    sizes = candidates + labelled
    kept = (sizes > min_cluster_size) & (candidates > 0)
    if candidates[kept].sum() < k:
        kept = candidates > 0
    kept = np.flatnonzero(kept)
    return kept[np.lexsort((-sizes[kept], labelled[kept]))]


def _round_robin(order: np.ndarray, candidates: np.ndarray, k: int) -> list[int]:
    """The cluster of each of the k picks: `order` over and over, skipping the clusters whose
    candidates are all taken (`order` holds at least k candidates in all)."""
    visits, turn = [], 0
    while len(visits) < k:
        visits.extend(int(cluster) for cluster in order if candidates[cluster] > turn)
        turn += 1
    return visits[:k]


def _blocks(count: int, width: int):
    """Slices of `count` rows, each small enough for a (rows, width) block to hold BLOCK_CELLS cells."""
    step = max(1, BLOCK_CELLS // max(1, width))
    for start in range(0, count, step):
        yield slice(start, min(start + step, count))


def _seed(rng: np.random.Generator) -> int:
    """A seed for scikit-learn, drawn from `rng`: the same generator gives the same choice."""
    return int(rng.integers(2**31))
