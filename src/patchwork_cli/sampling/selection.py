"""Selections: which k of the scored candidates to show, pure numpy.

Each returns (indices into the candidates in the order chosen, the score that chose
each). Ties go to the earlier row, so a deterministic strategy is reproducible.
"""

from __future__ import annotations

import numpy as np

from patchwork_cli.sampling.geometry import Points, nearest_squared_distance


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores, highest first (modAL's multi_argmax), in O(N) plus O(k log k)."""
    scores = np.asarray(scores)
    k = min(k, len(scores))
    if k == 0:
        return np.empty(0, dtype=np.int64), scores[:0]
    threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
    above = np.flatnonzero(scores > threshold)
    ties = np.flatnonzero(scores == threshold)[: k - len(above)]
    chosen = np.sort(np.concatenate([above, ties]))
    chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
    return chosen, scores[chosen]


def weighted_draw(weights: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k rows drawn without replacement with probability proportional to `weights`: the
    top k of the keys log(u) / w (Efraimidis & Spirakis 2006, "Weighted random sampling
    with a reservoir"). A zero weight is floored so such rows still come, last and in random order."""
    weights = np.maximum(np.asarray(weights, dtype=np.float64), 1e-300)
    keys = np.log(rng.random(len(weights))) / weights
    chosen, _ = top_k(keys, k)
    return chosen, weights[chosen]


def random_draw(count: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k rows uniformly without replacement; the score is each row's uniform key."""
    return top_k(rng.random(count), k)


# cluster-margin's shortlist, in multiples of the batch: chosen by benchmarks/active_learning.py
# (5 seeds, digits, auto's rounds): 3 reached random's final accuracy with 120 labels (range
# 100-120), 5 with 120 (100-140), 10 with 140 (80-140); a wider shortlist admits rows the model is
# already sure of, which diversity then prefers because they lie apart from the uncertain ones.
CLUSTER_MARGIN_SHORTLIST = 3


def cluster_margin(
    uncertainty: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    shortlist_factor: int = CLUSTER_MARGIN_SHORTLIST,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-Margin (Citovsky et al. 2021, "Batch Active Learning at Scale"): the
    `shortlist_factor` * k most uncertain rows, clustered into k groups on their embeddings, then
    round-robin over the groups: each group's most uncertain row, most uncertain first; a group's
    second row only if some group came out empty (duplicate embeddings). The score is the uncertainty.

    The paper clusters the whole pool once (average-linkage HAC) and reuses that every round; here
    each call clusters only its shortlist, with k-means (as Zhdanov 2019, "Diverse mini-batch Active
    Learning", clusters its prefiltered most informative rows): linear in the shortlist, where HAC
    is quadratic in it."""
    shortlist, shortlist_scores = top_k(uncertainty, shortlist_factor * k)
    if len(shortlist) <= k:
        return shortlist, shortlist_scores
    from sklearn.cluster import KMeans  # here, not at the top: two seconds to import, for this strategy alone

    seed = int(rng.integers(2**31))
    groups = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(embeddings[shortlist])
    # The shortlist is in uncertainty order, so a stable sort by rank within the group is the round-robin.
    order = np.argsort(_rank_within_groups(groups), kind="stable")[:k]
    return shortlist[order], shortlist_scores[order]


def kmeans_pp_seeding(points, k: int, rng: np.random.Generator, centres=None) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) as BADGE uses it (Ash et al. 2020): each
    next point drawn with probability proportional to its squared distance to the nearest
    centre so far. `centres` (already labelled rows) start the set; without them the first
    pick is the point farthest from the origin (the largest gradient), as in BADGE's code.
    The score is the squared distance at the moment of the pick."""
    k = min(k, len(points))
    seeded = centres is not None and len(centres) > 0
    nearest = nearest_squared_distance(points, centres) if seeded else points.squared_norms.copy()
    available = np.ones(len(points), dtype=bool)
    chosen, scores = [], []
    for step in range(k):
        pick = _draw_proportional(nearest, available, rng) if seeded or step else int(np.argmax(nearest))
        chosen.append(pick)
        scores.append(float(nearest[pick]))
        _move_closer(nearest, points, pick)
        nearest[pick], available[pick] = 0, False  # rounding must not let a chosen point come back
    return np.array(chosen, dtype=np.int64), np.array(scores)


def k_center_greedy(points: Points, k: int, centres: Points | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Sener & Savarese 2018, "Active Learning for Convolutional Neural
    Networks: A Core-Set Approach"; Gonzalez 1985, a 2-approximation): each next point is
    the one farthest from every centre so far. `centres` (already labelled rows) start the
    set; without them, the mean of the points does, so the first pick is the most atypical.
    The score is the distance (not squared) at the moment of the pick."""
    k = min(k, len(points))
    if centres is None or len(centres) == 0:
        centres = Points(points.x.mean(axis=0, keepdims=True))
    nearest = nearest_squared_distance(points, centres)
    chosen, scores = [], []
    for _ in range(k):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        scores.append(float(np.sqrt(nearest[pick])))
        _move_closer(nearest, points, pick)
        nearest[pick] = -np.inf  # never again, even when every remaining distance is zero
    return np.array(chosen, dtype=np.int64), np.array(scores)


def _rank_within_groups(groups: np.ndarray) -> np.ndarray:
    """For each element, how many elements of its group come before it (0 for the first)."""
    by_group = np.argsort(groups, kind="stable")
    sizes = np.bincount(groups)
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[by_group] = np.arange(len(groups)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return ranks


def _move_closer(nearest: np.ndarray, points, pick: int) -> None:
    """Update each point's nearest-centre distance now that `pick` is a centre."""
    np.minimum(nearest, points.squared_distances(points.take(np.array([pick])))[:, 0], out=nearest)


def _draw_proportional(weights: np.ndarray, available: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probability proportional to `weights`; uniform over the available
    indices when every weight is zero (all the rest coincide with centres)."""
    cumulative = np.cumsum(weights, dtype=np.float64)
    if cumulative[-1] <= 0:
        return int(rng.choice(np.flatnonzero(available)))
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
