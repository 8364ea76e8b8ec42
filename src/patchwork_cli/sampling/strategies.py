"""Strategies: a score function and a selection, named as `--strategy` spells them.

`choose` is pure: it takes the candidates' arrays (a Pool) and returns which of them to
show and why. Loading those arrays from the project and its run is sample()'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..errors import PatchworkError, did_you_mean
from . import scores, selection
from .filters import check_class
from .geometry import GradientPoints, Points

STRATEGIES = (
    "random",
    "maxent",
    "maxent+sum",
    "maxent:C",
    "high:C",
    "low:C",
    "badge",
    "coreset",
    "disagree",
)
# What each strategy reads from the run: predictions always, embeddings for the diversity ones.
NEEDS_EMBEDDINGS = ("badge", "coreset")


@dataclasses.dataclass(frozen=True)
class Strategy:
    form: str  # as STRATEGIES spells it: "maxent:C"
    target: str | None = None  # the class C

    @property
    def name(self) -> str:
        return self.form.replace(":C", f":{self.target}") if self.target else self.form

    @property
    def needs_model(self) -> bool:
        return self.form != "random"

    @property
    def needs_embeddings(self) -> bool:
        return self.form in NEEDS_EMBEDDINGS


@dataclasses.dataclass
class Pool:
    """The candidates' arrays, aligned row for row, columns in the run's class order.

    p: (n, C) probabilities; h: (n, d) embeddings; labels: (n, C), NaN = unlabelled;
    target: the column of the strategy's class; seen_h / seen_p: the labelled rows that
    are not candidates, the initial centres of badge and coreset."""

    count: int
    p: np.ndarray | None = None
    h: np.ndarray | None = None
    labels: np.ndarray | None = None
    target: int | None = None
    seen_p: np.ndarray | None = None
    seen_h: np.ndarray | None = None


def parse_strategy(spec: str, classes: Sequence[str]) -> Strategy:
    """`spec` as the user wrote it; an unknown strategy or class lists the valid ones."""
    name, colon, argument = spec.partition(":")
    if not colon and name in STRATEGIES:
        return Strategy(name)
    if colon and f"{name}:C" in STRATEGIES and argument:
        return Strategy(f"{name}:C", check_class(argument, classes))
    raise PatchworkError(
        f"unknown strategy {spec!r}{did_you_mean(spec, STRATEGIES)}; strategies: {', '.join(STRATEGIES)} (C a class)"
    )


def choose(strategy: Strategy, pool: Pool, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(indices into the pool in rank order, their scores)."""
    form = strategy.form
    if form == "random":
        return selection.random_draw(pool.count, k, rng)
    if form in ("maxent", "maxent+sum"):
        return selection.top_k(scores.max_entropy(pool.p, "sum" if form == "maxent+sum" else "max"), k)
    if form == "maxent:C":
        return selection.top_k(scores.binary_entropy(pool.p[:, pool.target]), k)
    if form == "high:C":  # likely positives (with --from lacks:C: hard negatives)
        return selection.weighted_draw(pool.p[:, pool.target], k, rng)
    if form == "low:C":  # likely negatives (with --from contains:C: hard positives)
        return selection.weighted_draw(1.0 - pool.p[:, pool.target], k, rng)
    if form == "badge":
        points = GradientPoints(pool.h, scores.hard_prediction_gradient(pool.p))
        seen = GradientPoints(pool.seen_h, scores.hard_prediction_gradient(pool.seen_p))
        return selection.kmeans_pp_seeding(points, k, rng, seen)
    if form == "coreset":
        return selection.k_center_greedy(Points(pool.h), k, Points(pool.seen_h))
    if form == "disagree":
        gaps = scores.disagreement(pool.p, pool.labels)
        labelled = np.flatnonzero(~np.isnan(gaps))
        chosen, chosen_scores = selection.top_k(gaps[labelled], k)
        return labelled[chosen], chosen_scores
    raise AssertionError(form)  # pragma: no cover - parse_strategy admits only STRATEGIES
