"""Strategies: a score function and a selection each, as sampling/registry.py names them.

`choose` is pure: it takes the candidates' arrays (a Pool) and returns which of them to
show and why. Loading those arrays from the project and its run is sample()'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from patchwork_cli.errors import PatchworkError, did_you_mean
from patchwork_cli.sampling import coverage, label_errors, scores, selection
from patchwork_cli.sampling.filters import check_class
from patchwork_cli.sampling.geometry import GradientPoints, Points
from patchwork_cli.sampling.registry import BY_NAME, FROM_RUN, RECORDS, STRATEGIES, StrategyRecord, listing

# auto leaves coverage for uncertainty once every class has this many positive training labels:
# before that a model cannot be uncertain about a class it has never seen, and typical examples
# teach more (Hacohen et al. 2022: in the lowest budgets coverage beats uncertainty). Chosen by
# benchmarks/active_learning.py (3 seeds, digits and MNIST): switching at 1 beat switching at 3
# on both (area under the learning curve 0.867 vs 0.859 and 0.869 vs 0.855).
AUTO_MIN_LABELS_PER_CLASS = 1
# What a strategy returns: indices into the pool in rank order, and their scores.
Picks = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Strategy:
    form: str  # as its record spells it: "maxent:C"
    target: str | None = None  # the class C

    @property
    def record(self) -> StrategyRecord:
        return BY_NAME[self.form]

    @property
    def name(self) -> str:
        return self.form.replace(":C", f":{self.target}") if self.target else self.form

    @property
    def needs_model(self) -> bool:
        return any(source in FROM_RUN for source in self.record.reads)

    @property
    def needs_embeddings(self) -> bool:
        return "embeddings" in self.record.reads

    @property
    def needs_features(self) -> bool:
        return "features" in self.record.reads


@dataclasses.dataclass
class Pool:
    """The candidates' arrays, aligned row for row, columns in the run's class order.

    p: (n, C) probabilities; h: (n, d) embeddings (as the run stores them: on its principal
    axes when the head's are wider than util.projection.REDUCED_WIDTH); labels: (n, C), NaN =
    unlabelled; target: the column of the strategy's class; seen_h / seen_p: the labelled rows
    that are not candidates, the initial centres of badge and coreset. features: (n, r) float32,
    the store's reduced copy (the pooled features, L2-normalised, on the store's principal
    axes: features.FeatureStore.reduced_rows); seen_features: those of the labelled
    non-candidate rows, which typiclust and probcover count as covered. task: "multilabel"
    (sigmoid outputs) or "multiclass" (softmax), for margin; class_count: the number of
    classes, probcover's number of pseudo-labels (None: its default)."""

    count: int
    p: np.ndarray | None = None
    h: np.ndarray | None = None
    labels: np.ndarray | None = None
    target: int | None = None
    seen_p: np.ndarray | None = None
    seen_h: np.ndarray | None = None
    features: np.ndarray | None = None
    seen_features: np.ndarray | None = None
    task: str = "multilabel"
    class_count: int | None = None


def parse_strategy(spec: str, classes: Sequence[str]) -> Strategy:
    """`spec` as the user wrote it; an unknown strategy or class lists the valid ones."""
    name, colon, argument = spec.partition(":")
    if not colon and name in STRATEGIES:
        return Strategy(name)
    if colon and f"{name}:C" in STRATEGIES and argument:
        return Strategy(f"{name}:C", check_class(argument, classes))
    raise PatchworkError(
        f"unknown strategy {spec!r}{did_you_mean(spec, STRATEGIES)}; strategies: {listing()} (C a class)"
    )


def auto_strategy(task: str, labelled_counts_per_class: Sequence[int], has_run: bool) -> str:
    """The strategy `auto` stands for. Coverage (typiclust) while there is no model or some class
    has fewer than AUTO_MIN_LABELS_PER_CLASS (1) labelled examples (for multilabel, count each
    class's positives: a class without them cannot be learnt); then diverse uncertainty:
    cluster-margin for multiclass (the gap between softmax classes), badge for multilabel (its
    gradient embedding treats each sigmoid output on its own). typiclust rather than probcover
    because it needs no radius: its one parameter, the number of clusters, follows from the budget."""
    if task not in scores.TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(scores.TASKS)}")
    if not has_run or min(labelled_counts_per_class, default=0) < AUTO_MIN_LABELS_PER_CLASS:
        return "typiclust"
    return "cluster-margin" if task == "multiclass" else "badge"


def choose(strategy: Strategy, pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    """(indices into the pool in rank order, their scores)."""
    return _FUNCTIONS[strategy.form](pool, k, rng)


# The strategies' functions, one per record of the registry, which names them: choose_<what>.


def choose_random(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.random_draw(pool.count, k, rng)


def choose_maxent(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.top_k(scores.max_entropy(pool.p), k)


def choose_maxent_sum(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.top_k(scores.summed_entropy(pool.p), k)


def choose_maxent_class(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.top_k(scores.binary_entropy(pool.p[:, pool.target]), k)


def choose_high(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    """Likely positives (with --from lacks:C: hard negatives)."""
    return selection.weighted_draw(pool.p[:, pool.target], k, rng)


def choose_low(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    """Likely negatives (with --from contains:C: hard positives)."""
    return selection.weighted_draw(1.0 - pool.p[:, pool.target], k, rng)


def choose_badge(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    points = GradientPoints(pool.h, scores.hard_prediction_gradient(pool.p, pool.task))
    seen = GradientPoints(pool.seen_h, scores.hard_prediction_gradient(pool.seen_p, pool.task))
    return selection.kmeans_pp_seeding(points, k, rng, seen)


def choose_coreset(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.k_center_greedy(Points(pool.h), k, Points(pool.seen_h))


def choose_disagree(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    labelled = np.flatnonzero(~np.isnan(pool.labels).all(axis=1))
    ranking = label_errors.rank_labels(pool.p[labelled], pool.labels[labelled], pool.task)
    order = ranking.order()[:k]
    return labelled[order], ranking.score[order]


def choose_margin(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.top_k(scores.margin(pool.p, pool.task), k)


def choose_cluster_margin(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return selection.cluster_margin(scores.margin(pool.p, pool.task), pool.h, k, rng)


def choose_typiclust(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    return coverage.typiclust(pool.features, k, rng, pool.seen_features)


def choose_probcover(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    classes = pool.class_count or coverage.PSEUDO_CLASSES
    return coverage.probcover(pool.features, k, rng, pool.seen_features, pseudo_classes=classes)


def choose_auto(pool: Pool, k: int, rng: np.random.Generator) -> Picks:
    raise ValueError("strategy 'auto' stands for another: resolve it with auto_strategy() before choose()")


# Looked up once, here: a record naming a function this module lacks fails at import.
_FUNCTIONS = {record.name: globals()[record.function] for record in RECORDS}
