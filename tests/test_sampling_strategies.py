"""The strategies of issue 10 on small hand-checked arrays: margin, cluster-margin, typiclust,
probcover (against the paper's greedy written out with every distance), auto's rule, and the
registry that names each strategy's function."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from patchwork_cli.sampling import coverage, registry, scores, selection, strategies
from patchwork_cli.sampling.strategies import Pool, auto_strategy, choose, parse_strategy


def groups(centres, sizes, spread, rng):
    """Tight groups of points: `sizes[g]` points within `spread` of `centres[g]`, group by group."""
    return np.concatenate([c + rng.uniform(-spread, spread, (n, len(c))) for c, n in zip(centres, sizes, strict=True)])


# --- margin --------------------------------------------------------------------------------


def test_margin_multiclass_is_one_minus_the_gap_of_the_top_two():
    p = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.1, 0.6, 0.3]])
    np.testing.assert_allclose(scores.margin(p, "multiclass"), [0.8, 1.0, 0.0, 0.7], atol=1e-6)


def test_margin_multilabel_is_set_by_the_class_nearest_one_half():
    # Nearest 1/2: 0.3 (0.2 away, gap 0.4), 0.5 (gap 0), 0 and 1 (gap 1), 0.75 (gap 0.5).
    p = np.array([[0.9, 0.3], [0.5, 1.0], [0.0, 1.0], [0.8, 0.75]])
    np.testing.assert_allclose(scores.margin(p, "multilabel"), [0.6, 1.0, 0.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="^unknown task 'multi'; tasks: multilabel, multiclass"):
        scores.margin(p, "multi")


def test_margin_strategy_follows_the_pools_task():
    # Row 0: a tie between two softmax classes; row 1: one sigmoid output at exactly 1/2.
    p = np.array([[0.45, 0.45, 0.1], [0.5, 0.2, 0.3]])
    margin = parse_strategy("margin", ["a", "b", "c"])
    multiclass = choose(margin, Pool(count=2, p=p, task="multiclass"), 2, np.random.default_rng())
    multilabel = choose(margin, Pool(count=2, p=p), 2, np.random.default_rng())
    assert multiclass[0].tolist() == [0, 1] and multilabel[0].tolist() == [1, 0]
    np.testing.assert_allclose(multiclass[1], [1.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(multilabel[1], [1.0, 0.9], atol=1e-6)


# --- cluster-margin ------------------------------------------------------------------------


@pytest.mark.slow
def test_cluster_margin_takes_the_most_uncertain_of_each_cluster():
    rng = np.random.default_rng(0)
    # Rows 0-2 near (0, 0) are the most uncertain, rows 3-5 near (100, 0) a little less, rows
    # 6-45 near (0, 100) confident: the shortlist of 3 * 2 (CLUSTER_MARGIN_SHORTLIST) is the first two groups.
    assert selection.CLUSTER_MARGIN_SHORTLIST == 3
    h = groups([(0, 0), (100, 0), (0, 100)], [3, 3, 40], 0.5, rng)
    uncertainty = np.concatenate([[0.99, 0.95, 0.90], [0.89, 0.85, 0.80], np.full(40, 0.1)])
    chosen, chosen_scores = selection.cluster_margin(uncertainty, h, 2, np.random.default_rng(1))
    assert chosen.tolist() == [0, 3]  # top-k alone would take rows 0 and 1, both from the first group
    np.testing.assert_allclose(chosen_scores, [0.99, 0.89])
    # Through choose: the margin of the pool's probabilities, clustered on its embeddings.
    p = np.stack([uncertainty / 2, 1 - uncertainty / 2], axis=1)  # multiclass margin = uncertainty
    pool = Pool(count=46, p=p, h=h, task="multiclass")
    chosen, _ = choose(parse_strategy("cluster-margin", ["a", "b"]), pool, 2, np.random.default_rng(1))
    assert chosen.tolist() == [0, 3]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_cluster_margin_fills_up_when_clusters_come_out_empty():
    # Two distinct embeddings for three clusters: the third pick is the first group's second row.
    h = np.repeat([[0.0, 0.0], [1.0, 0.0]], 3, axis=0)
    uncertainty = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    chosen, _ = selection.cluster_margin(uncertainty, h, 3, np.random.default_rng(0))
    assert chosen.tolist() == [0, 3, 1]
    # A shortlist no longer than k is the top k as it is.
    assert selection.cluster_margin(uncertainty, h, 10, np.random.default_rng(0))[0].tolist() == list(range(6))


# --- typiclust -----------------------------------------------------------------------------


def brute_force_typicality(x):
    """1 / (mean distance to the K = min(20, n // 2) nearest others + 1e-5), every distance written out."""
    distances = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    return 1 / (np.sort(distances, axis=1)[:, : min(20, len(x) // 2)].mean(axis=1) + 1e-5)


def three_groups():
    """Candidates in three groups of 12 (rows 0-11), 9 (12-20) and 7 (21-27), and one labelled
    row in the first group: the largest group is covered, the two others are not."""
    rng = np.random.default_rng(0)
    x = groups([(0, 0), (10, 0), (0, 10)], [13, 9, 7], 1.0, rng)
    return x[1:], x[:1], [np.arange(0, 12), np.arange(12, 21), np.arange(21, 28)]


def test_typiclust_takes_the_most_typical_of_the_largest_uncovered_clusters():
    candidates, seen, members = three_groups()
    best = [rows[np.argsort(-brute_force_typicality(candidates[rows]), kind="stable")] for rows in members]
    chosen, typicalities = coverage.typiclust(candidates, 2, np.random.default_rng(0), seen)
    # 1 labelled + 2 = 3 clusters; the largest (labelled) one is skipped, the 9 before the 7.
    assert chosen.tolist() == [best[1][0], best[2][0]]
    expected = [brute_force_typicality(candidates[members[g]]).max() for g in (1, 2)]
    np.testing.assert_allclose(typicalities, expected, rtol=1e-4)  # float32 distances
    # Three clusters at most and four picks: round-robin, the labelled cluster last in each round.
    chosen, _ = coverage.typiclust(candidates, 4, np.random.default_rng(0), seen, max_clusters=3)
    assert chosen.tolist() == [best[1][0], best[2][0], best[0][0], best[1][1]]
    # Without the labelled row the largest cluster comes first.
    assert coverage.typiclust(candidates, 1, np.random.default_rng(0))[0].tolist() == [best[0][0]]


def test_typiclust_leaves_out_outlier_clusters():
    candidates, _, members = three_groups()
    # The seven-row group counts as outliers at min_cluster_size 7: the other two come first.
    chosen, _ = coverage.typiclust(candidates, 3, np.random.default_rng(0), max_clusters=3, min_cluster_size=7)
    assert [np.searchsorted([12, 21], row, side="right") for row in chosen] == [0, 1, 0]
    # Unless every other candidate is taken: then the outliers too.
    chosen, _ = coverage.typiclust(candidates, 28, np.random.default_rng(0), max_clusters=3, min_cluster_size=7)
    assert sorted(chosen.tolist()) == list(range(28))


def test_typicality_with_every_row_or_a_sample_of_neighbours():
    x = np.random.default_rng(3).normal(size=(12, 3))
    np.testing.assert_allclose(coverage.typicality(x, np.random.default_rng(0)), brute_force_typicality(x), rtol=1e-4)
    # Five sampled neighbours: each row's K nearest among the sample, itself left out; K = 4 for
    # every row, since a sampled row has only four others.
    sample = np.sort(np.random.default_rng(0).choice(12, 5, replace=False))
    distances = np.linalg.norm(x[:, None] - x[None, sample], axis=2)
    distances[sample, np.arange(5)] = np.inf
    expected = 1 / (np.sort(distances, axis=1)[:, :4].mean(axis=1) + 1e-5)
    sampled = coverage.typicality(x, np.random.default_rng(0), neighbours=5, neighbour_sample=5)
    np.testing.assert_allclose(sampled, expected, rtol=1e-4)
    # A lone row has no neighbour: typicality 0.
    assert coverage.typicality(x[:1], np.random.default_rng(0)).tolist() == [0]


# --- probcover -----------------------------------------------------------------------------


def brute_force_probcover(x, seen, k, delta):
    """ProbCover's greedy as the paper states it: the ball graph as a dense matrix; the labelled
    rows' balls covered first; each pick the row whose ball holds the most uncovered rows."""
    inside = np.linalg.norm(x[:, None] - x[None], axis=2) < delta  # inside[i, j]: j in the ball of i
    covered = (np.linalg.norm(seen[:, None] - x[None], axis=2) < delta).any(axis=0)
    chosen, gains = [], []
    for _ in range(k):
        gain = [-1 if i in chosen else int((inside[i] & ~covered).sum()) for i in range(len(x))]
        chosen.append(int(np.argmax(gain)))
        gains.append(max(gain))
        covered |= inside[chosen[-1]]
    return chosen, gains


def test_probcover_matches_the_brute_force_greedy():
    rng = np.random.default_rng(5)
    x, seen = rng.uniform(size=(80, 2)), rng.uniform(size=(5, 2))
    expected, expected_gains = brute_force_probcover(x, seen, 10, 0.15)
    chosen, gains = coverage.probcover(x, 10, np.random.default_rng(0), seen, delta=0.15)
    assert chosen.tolist() == expected and gains.tolist() == expected_gains
    unlabelled, _ = coverage.probcover(x, 10, np.random.default_rng(0), delta=0.15)
    assert unlabelled.tolist() == brute_force_probcover(x, seen[:0], 10, 0.15)[0]


def test_probcover_counts_labelled_balls_as_covered_then_starts_a_second_layer():
    # Tight groups of 8 (rows 0-7), 6 (8-13) and 4 (14-17); a ball of radius 1 holds a whole group.
    x = groups([(0, 0), (10, 0), (0, 10)], [8, 6, 4], 0.01, np.random.default_rng(0))
    chosen, gains = coverage.probcover(x, 5, np.random.default_rng(0), delta=1.0)
    # One per group, largest first; then everything is covered, and the second layer covers
    # the groups again without the picks: row 1 (7 new), row 9 (5), not rows 1 and 2 of the first group.
    assert chosen.tolist() == [0, 8, 14, 1, 9] and gains.tolist() == [8, 6, 4, 7, 5]
    labelled = coverage.probcover(x, 2, np.random.default_rng(0), x[:1] + 0.001, delta=1.0)
    assert labelled[0].tolist() == [8, 14] and labelled[1].tolist() == [6, 4]


def brute_force_purity_radius(x, labels, alpha):
    """The largest delta among all pairwise distances for which a share >= alpha of the balls
    {x' : |x - x'| < delta} hold one label."""
    distances = np.linalg.norm(x[:, None] - x[None], axis=2)
    other = labels[:, None] != labels[None, :]
    purity = lambda delta: ((distances < delta) & other).any(axis=1).__invert__().mean()  # noqa: E731
    return max(delta for delta in np.unique(distances) if purity(delta) >= alpha)


def test_purity_radius_is_the_largest_delta_with_enough_pure_balls():
    x = np.random.default_rng(6).uniform(size=(40, 2))
    labels = (x[:, 0] > 0.5).astype(int)
    for alpha in (0.8, 0.95, 1.0):
        expected = brute_force_purity_radius(x, labels, alpha)
        assert coverage.purity_radius(x, labels, alpha) == pytest.approx(expected, rel=1e-4)


def test_probcover_chooses_its_radius_and_projects_wide_features():
    # Three tight groups in 64 dimensions, projected on 8 axes, delta from the purity rule with
    # three pseudo-classes: every ball holds about one group, so three picks take one each.
    rng = np.random.default_rng(7)
    centres = 10 * np.eye(64)[:3]
    x = groups(centres, [30, 20, 10], 0.05, rng).astype(np.float32)
    chosen, _ = coverage.probcover(x, 3, np.random.default_rng(0), dimensions=8, pseudo_classes=3)
    assert sorted(np.searchsorted([30, 50], chosen, side="right").tolist()) == [0, 1, 2]


# --- auto and the strategy table -----------------------------------------------------------


@pytest.mark.parametrize(
    "task, counts, has_run, expected",
    [
        ("multiclass", [9, 9], False, "typiclust"),  # no model yet
        ("multiclass", [9, 0], True, "typiclust"),  # a class without a positive label
        ("multiclass", [1, 1], True, "cluster-margin"),
        ("multilabel", [1, 12], True, "badge"),
        ("multilabel", [0, 12], True, "typiclust"),
        ("multilabel", [], True, "typiclust"),  # no labels at all
    ],
)
def test_auto_switches_from_coverage_to_uncertainty(task, counts, has_run, expected):
    assert auto_strategy(task, counts, has_run) == expected


def test_auto_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="^unknown task"):
        auto_strategy("binary", [5], True)


def test_new_strategies_parse_and_say_what_they_read():
    classes = ["cat", "dog"]
    typiclust, probcover = parse_strategy("typiclust", classes), parse_strategy("probcover", classes)
    assert typiclust.needs_features and probcover.needs_features
    assert not typiclust.needs_model and not probcover.needs_model and not parse_strategy("random", classes).needs_model
    cluster_margin = parse_strategy("cluster-margin", classes)
    assert cluster_margin.needs_model and cluster_margin.needs_embeddings and not cluster_margin.needs_features
    assert parse_strategy("margin", classes).needs_model and not parse_strategy("margin", classes).needs_embeddings
    with pytest.raises(ValueError, match="resolve it with auto_strategy"):
        choose(parse_strategy("auto", classes), Pool(count=3), 1, np.random.default_rng())


def test_choose_runs_the_coverage_strategies_on_the_pools_features(monkeypatch):
    candidates, seen, _ = three_groups()
    pool = Pool(count=len(candidates), features=candidates, seen_features=seen, class_count=3)
    direct = coverage.typiclust(candidates, 2, np.random.default_rng(4), seen)
    chosen = choose(parse_strategy("typiclust", ["a"]), pool, 2, np.random.default_rng(4))
    assert chosen[0].tolist() == direct[0].tolist()
    calls = []
    monkeypatch.setattr(coverage, "probcover", lambda *args, **options: calls.append((args, options)))
    choose(parse_strategy("probcover", ["a"]), pool, 2, np.random.default_rng(4))
    (features, k, _, labelled), options = calls[0]
    assert features is candidates and k == 2 and labelled is seen and options == {"pseudo_classes": 3}


# --- the registry ------------------------------------------------------------------------


def test_every_record_names_a_strategy_function_and_every_strategy_function_has_a_record():
    functions = {name for name, value in vars(strategies).items() if name.startswith("choose_") and callable(value)}
    named = [record.function for record in registry.RECORDS]
    assert sorted(named) == sorted(functions)  # each function once, none missing, none without a record
    assert len(set(registry.STRATEGIES)) == len(registry.STRATEGIES)
    for name in functions:  # what choose() passes each
        assert list(inspect.signature(getattr(strategies, name)).parameters) == ["pool", "k", "rng"], name
