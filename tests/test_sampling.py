"""Sampling: every filter, score, selection and strategy on small hand-checked arrays, and
sample() over a project with a run written by hand (no TensorFlow involved)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from builders import SAMPLE_PREDICTIONS as P
from builders import write_run

from patchwork_cli.errors import PatchworkError
from patchwork_cli.sampling import geometry, scores, selection
from patchwork_cli.sampling.filters import filter_mask
from patchwork_cli.sampling.geometry import GradientPoints, Points, nearest_squared_distance
from patchwork_cli.sampling.sample import FILTERS, STRATEGIES, sample
from patchwork_cli.sampling.strategies import Pool, choose, parse_strategy
from patchwork_cli.store.label_table import empty_table
from patchwork_cli.store.project import open_project

NAN = np.nan


# --- filters ---------------------------------------------------------------------------


def hand_table():
    """Six rows over classes a, b: see the comments for what each is."""
    table = empty_table(["a", "b"], [f"r{i}" for i in range(6)])
    table[["a", "b"]] = [
        [NAN, NAN],  # 0 unlabelled
        [1, NAN],  # 1 partial, subset x
        [0, 1],  # 2 labelled, validation
        [1, 0],  # 3 labelled, excluded
        [NAN, NAN],  # 4 unlabelled, excluded
        [NAN, 0],  # 5 partial, subset x, validation
    ]
    table["subset"] = ["", "x", "", "", "", "x"]
    table["validation"] = [False, False, True, False, False, True]
    table["exclude"] = [False, False, False, True, True, False]
    return table


@pytest.mark.parametrize(
    "specs, rows",
    [
        (["unlabeled"], [0]),
        (["partial"], [1, 5]),
        (["labeled"], [2]),
        (["all"], [0, 1, 2, 5]),
        (["excluded"], [3, 4]),
        (["validation"], [2, 5]),
        (["unlabeled:a"], [0, 5]),
        (["contains:a"], [1]),
        (["lacks:a"], [2]),
        (["subset:x"], [1, 5]),
        (["subset:"], [0, 2]),
        (["partial", "subset:x"], [1, 5]),
        (["validation", "lacks:b"], [5]),
        (["unlabeled", "excluded"], [4]),
        (["contains:a", "excluded"], [3]),
        (["excluded", "labeled"], [3]),
        (["contains:a", "lacks:a"], []),
    ],
)
def test_filters(specs, rows):
    assert np.flatnonzero(filter_mask(hand_table(), ["a", "b"], specs)).tolist() == rows


@pytest.mark.parametrize(
    "spec, message",
    [
        ("unlabelled", "unknown filter 'unlabelled' (did you mean 'unlabeled'?); filters: unlabeled, partial,"),
        ("contains", "unknown filter 'contains'"),
        ("contains:", "unknown filter 'contains:'"),
        ("subset", "unknown filter 'subset'"),
        ("all:a", "unknown filter 'all:a'"),
        ("lacks:c", "unknown class 'c'; classes: a, b"),
    ],
)
def test_bad_filters_list_the_valid_ones(spec, message):
    with pytest.raises(PatchworkError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        filter_mask(hand_table(), ["a", "b"], [spec])


def test_every_listed_filter_parses():
    for spec in FILTERS:
        filter_mask(hand_table(), ["a", "b"], [spec.replace(":C", ":a").replace(":V", ":x")])


# --- scores ------------------------------------------------------------------------------


def test_binary_entropy_in_bits():
    p = np.array([0.0, 0.5, 1.0, 0.25, 0.75])
    expected = [0, 1, 0, 0.811278, 0.811278]
    np.testing.assert_allclose(scores.binary_entropy(p), expected, atol=1e-6)


def test_max_entropy_and_summed_entropy():
    p = np.array([[0.5, 0.0, 1.0], [0.25, 0.25, 0.25], [0.9, 0.99, 0.999]])
    one = scores.binary_entropy(np.array([0.25]))[0]
    np.testing.assert_allclose(scores.max_entropy(p)[:2], [1, one])
    np.testing.assert_allclose(scores.summed_entropy(p)[:2], [1, 3 * one])
    # Max ranks the row with one coin-flip class first; sum the row that is a little unsure everywhere.
    assert np.argmax(scores.max_entropy(p)) == 0 and np.argmax(scores.summed_entropy(p)) == 1


def test_gradient_factor_is_p_minus_the_hard_prediction():
    np.testing.assert_allclose(scores.hard_prediction_gradient(np.array([[0.2, 0.7, 0.5]])), [[0.2, -0.3, 0.5]])


# --- selections --------------------------------------------------------------------------


def test_top_k_orders_by_score_and_breaks_ties_by_row():
    values = np.array([0.1, 0.9, 0.5, 0.9, 0.5, 0.5])
    chosen, chosen_scores = selection.top_k(values, 4)
    assert chosen.tolist() == [1, 3, 2, 4] and chosen_scores.tolist() == [0.9, 0.9, 0.5, 0.5]
    assert selection.top_k(values, 10)[0].tolist() == [1, 3, 2, 4, 5, 0]
    assert selection.top_k(values[:0], 3)[0].tolist() == []


def test_weighted_draw_follows_the_weights_without_replacement():
    weights = np.array([1.0, 2.0, 7.0, 0.0])
    rng = np.random.default_rng(0)
    firsts = np.bincount([selection.weighted_draw(weights, 1, rng)[0][0] for _ in range(4000)], minlength=4)
    np.testing.assert_allclose(firsts / 4000, [0.1, 0.2, 0.7, 0.0], atol=0.025)
    chosen, chosen_weights = selection.weighted_draw(weights, 4, rng)
    assert sorted(chosen.tolist()) == [0, 1, 2, 3] and chosen[-1] == 3  # a zero weight comes last
    assert chosen_weights.tolist() == weights[chosen].tolist()[:3] + [1e-300]


def test_random_draw_is_distinct_and_reproducible():
    first = selection.random_draw(100, 10, np.random.default_rng(7))[0]
    assert len(set(first.tolist())) == 10
    assert first.tolist() == selection.random_draw(100, 10, np.random.default_rng(7))[0].tolist()


def explicit_gradients(h, g):
    """The (N, d*C) matrix BADGE's implicit distances stand for."""
    return np.einsum("nd,nc->ndc", h, g).reshape(len(h), -1)


def test_implicit_gradient_distances_match_the_explicit_matrix(monkeypatch):
    rng = np.random.default_rng(1)
    h, g = rng.normal(size=(30, 5)), rng.uniform(-0.5, 0.5, size=(30, 3))
    implicit, explicit = GradientPoints(h, g), explicit_gradients(h, g)
    brute = ((explicit[:, None, :] - explicit[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(implicit.squared_distances(implicit.take(np.arange(30))), brute, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(implicit.squared_norms, (explicit**2).sum(axis=1), rtol=1e-5)
    # The nearest centre over blocks of centres (here 2 at a time) equals the brute-force minimum.
    monkeypatch.setattr(geometry, "BLOCK_CELLS", 40)
    centres = np.arange(20, 30)
    nearest = nearest_squared_distance(implicit.take(np.arange(20)), implicit.take(centres))
    np.testing.assert_allclose(nearest, brute[:20, 20:].min(axis=1), rtol=1e-4, atol=1e-5)


def test_badge_seeding_picks_the_same_rows_as_on_the_explicit_matrix():
    rng = np.random.default_rng(2)
    h, g = rng.normal(size=(60, 8)), rng.uniform(-0.5, 0.5, size=(60, 4))
    for centres in (None, np.arange(50, 60)):
        candidates = np.arange(50)
        picks = []
        for points in (GradientPoints(h, g), Points(explicit_gradients(h, g))):
            seen = None if centres is None else points.take(centres)
            picks.append(selection.kmeans_pp_seeding(points.take(candidates), 12, np.random.default_rng(3), seen))
        assert picks[0][0].tolist() == picks[1][0].tolist()
        np.testing.assert_allclose(picks[0][1], picks[1][1], rtol=1e-3)
    # Without centres BADGE starts from the largest gradient embedding.
    first = selection.kmeans_pp_seeding(GradientPoints(h[:50], g[:50]), 1, np.random.default_rng(0))[0][0]
    assert first == np.argmax((explicit_gradients(h[:50], g[:50]) ** 2).sum(axis=1))


def test_kmeans_pp_never_draws_a_point_on_a_centre_and_finishes_on_duplicates():
    h = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    g = np.array([[0.5], [0.5], [0.5], [0.5]])
    points = GradientPoints(h[:3], g[:3])
    for seed in range(20):
        picks, distances = selection.kmeans_pp_seeding(points, 3, np.random.default_rng(seed), points.take([1]))
        # Rows 1 and 2 coincide with the centre: row 0 is the only one at a positive distance.
        assert picks[0] == 0 and sorted(picks.tolist()) == [0, 1, 2]
        np.testing.assert_allclose(distances, [0.5, 0, 0], atol=1e-6)


def brute_force_greedy(x, k, centres):
    """Greedy k-center with every distance written out, as the paper states it."""
    chosen = []
    for _ in range(k):
        gaps = [min(np.linalg.norm(x[i] - c) for c in [*centres, *x[chosen]]) for i in range(len(x))]
        gaps = [-1 if i in chosen else gap for i, gap in enumerate(gaps)]
        chosen.append(int(np.argmax(gaps)))
    return chosen


def test_coreset_matches_a_brute_force_greedy_k_center():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3))
    picks, gaps = selection.k_center_greedy(Points(x[:30]), 6, Points(x[30:]))
    assert picks.tolist() == brute_force_greedy(x[:30], 6, x[30:])
    expected_first = min(np.linalg.norm(x[picks[0]] - c) for c in x[30:])
    assert gaps[0] == pytest.approx(expected_first, rel=1e-4)
    # Without labelled rows the mean is the first centre: the first pick is the most atypical point.
    picks, _ = selection.k_center_greedy(Points(x[:30]), 6)
    assert picks.tolist() == brute_force_greedy(x[:30], 6, [x[:30].mean(axis=0)])


def test_coreset_is_within_twice_the_optimal_k_center_radius():
    x = np.random.default_rng(5).normal(size=(12, 2))
    k = 3
    radius = lambda centres: max(min(np.linalg.norm(p - x[c]) for c in centres) for p in x)  # noqa: E731
    optimal = min(radius(c) for c in itertools.combinations(range(len(x)), k))
    first = [int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))]
    picks, _ = selection.k_center_greedy(Points(x), k)
    assert picks[0] == first[0]
    assert radius(picks) <= 2 * optimal + 1e-9


def test_coreset_does_not_repeat_itself_on_duplicates():
    picks, gaps = selection.k_center_greedy(Points(np.ones((4, 2))), 4)
    assert sorted(picks.tolist()) == [0, 1, 2, 3] and gaps.tolist() == [0, 0, 0, 0]


# --- strategies --------------------------------------------------------------------------


def test_strategy_names_and_errors():
    classes = ["cat", "dog"]
    for spec in STRATEGIES:
        assert parse_strategy(spec.replace(":C", ":dog"), classes).name == spec.replace(":C", ":dog")
    assert parse_strategy("random", classes).needs_model is False
    assert parse_strategy("badge", classes).needs_embeddings and not parse_strategy("maxent", classes).needs_embeddings
    with pytest.raises(
        PatchworkError, match=r"^unknown strategy 'maxnet' \(did you mean 'maxent'\?\); strategies: random, maxent"
    ):
        parse_strategy("maxnet", classes)
    with pytest.raises(PatchworkError, match=r"^unknown class 'dgo' \(did you mean 'dog'\?\); classes: cat, dog"):
        parse_strategy("high:dgo", classes)
    for bad in ("maxent:", "badge:dog", "high"):
        with pytest.raises(PatchworkError, match="^unknown strategy"):
            parse_strategy(bad, classes)


def test_high_and_low_draw_toward_high_and_low_probability():
    p = np.array([[0.01], [0.5], [0.99]])
    rng = np.random.default_rng(0)
    pool = Pool(count=3, p=p, target=0)
    high = np.bincount([choose(parse_strategy("high:a", ["a"]), pool, 1, rng)[0][0] for _ in range(3000)], minlength=3)
    low = np.bincount([choose(parse_strategy("low:a", ["a"]), pool, 1, rng)[0][0] for _ in range(3000)], minlength=3)
    np.testing.assert_allclose(high / 3000, [0.01 / 1.5, 0.5 / 1.5, 0.99 / 1.5], atol=0.03)
    np.testing.assert_allclose(low / 3000, [0.99 / 1.5, 0.5 / 1.5, 0.01 / 1.5], atol=0.03)
    chosen, weights = choose(parse_strategy("low:a", ["a"]), pool, 3, rng)
    np.testing.assert_allclose(weights, 1 - p[chosen, 0])


def test_disagree_ranks_only_labelled_rows():
    pool = Pool(count=4, p=np.array([[0.9], [0.6], [0.1], [0.2]]), labels=np.array([[1], [0], [NAN], [1]]))
    chosen, gaps = choose(parse_strategy("disagree", ["a"]), pool, 10, np.random.default_rng())
    assert chosen.tolist() == [3, 1, 0]
    np.testing.assert_allclose(gaps, [0.8, 0.6, 0.1])


# --- sample() over a project ---------------------------------------------------------------


def test_sample_maxent_over_a_project(project_dir):
    write_run(project_dir, P)
    project = open_project(project_dir)
    chosen = sample(project, 3, strategy="maxent")
    assert chosen.columns.tolist() == ["row", "filepath", "score", "rank", "strategy"]
    assert chosen["row"].tolist() == [0, 5, 4] and chosen["rank"].tolist() == [1, 2, 3]
    assert chosen["filepath"].tolist() == [f"../images/img_{i:04d}.png" for i in (0, 5, 4)]
    np.testing.assert_allclose(chosen["score"], scores.binary_entropy(np.array([0.5, 0.45, 0.6])), rtol=1e-6)
    assert sample(project, 1, strategy="maxent+sum")["row"].tolist() == [2]
    assert sample(project, 2, strategy="maxent:dog")["row"].tolist() == [4, 2]
    # Labelled rows are not candidates by default; --from picks other rows.
    project.label("../images/img_0000.png", cat=1)
    assert sample(project, 1, strategy="maxent")["row"].tolist() == [5]
    assert sample(project, 5, strategy="maxent", filters=["partial"])["row"].tolist() == [0]


def test_sample_random_needs_no_model_and_follows_the_seed(project_dir):
    project = open_project(project_dir)
    chosen = sample(project, 5, strategy="random", seed=3)
    assert len(set(chosen["row"])) == 5 and chosen["row"].tolist() == sample(project, 5, seed=3)["row"].tolist()
    assert len(sample(project, 50, strategy="random")) == 12


def test_sample_disagree_defaults_to_every_labelled_row(project_dir):
    write_run(project_dir, P)
    project = open_project(project_dir)
    project.label("../images/img_0003.png", cat=1, dog=1)  # dog: p = 0.01 against label 1
    project.label("../images/img_0001.png", bird=0)  # p = 0.9 against 0
    chosen = sample(project, 10, strategy="disagree")
    assert chosen["row"].tolist() == [3, 1]
    np.testing.assert_allclose(chosen["score"], [0.99, 0.9], rtol=1e-6)
    assert sample(project, 10, strategy="disagree", filters=["unlabeled"]).empty


def test_sample_skips_rows_without_predictions(project_dir, images, cli):
    write_run(project_dir, P[:10])  # rows 10 and 11 were added after the run
    project = open_project(project_dir)
    assert sorted(sample(project, 12, strategy="maxent")["row"].tolist()) == list(range(10))
    # Rows whose features failed have NaN predictions.
    write_run(project_dir, np.where(np.arange(12)[:, None] == 0, NAN, P), run_id="20260101-000000-0002")
    assert 0 not in sample(project, 12, strategy="high:cat", seed=1)["row"].tolist()
    assert sample(project, 12, strategy="maxent", run_id="20260101-000000-0001")["row"].max() == 9


def test_sample_model_errors(project_dir):
    project = open_project(project_dir)
    with pytest.raises(PatchworkError, match=r"^no trained model yet: strategy 'badge' .* run 'patchwork train' first"):
        sample(project, 3, strategy="badge")
    with pytest.raises(PatchworkError, match=r"^unknown run 'nope'; runs: none yet"):
        sample(project, 3, strategy="maxent", run_id="nope")
    write_run(project_dir, P[:, :2], classes=["cat", "dog"])
    with pytest.raises(
        PatchworkError, match=r"^class 'bird' is not in run 20260101-000000-0001 \(trained on: cat, dog\)"
    ):
        sample(project, 3, strategy="low:bird")
    assert sample(project, 1, strategy="maxent")["row"].tolist() == [0]  # the run's two classes
    with pytest.raises(PatchworkError, match="^n must be at least 1"):
        sample(project, 0, strategy="random")
    with pytest.raises(PatchworkError, match="^unknown filter 'nope'"):
        sample(project, 3, strategy="maxent", filters=["nope"])


def test_sample_default_strategy_comes_from_the_config(project_dir):
    config = project_dir / "patchwork.yaml"
    config.write_text(config.read_text().replace("strategy: auto", "strategy: maxnet"))
    with pytest.raises(PatchworkError, match=r"/proj/patchwork.yaml: sampling.strategy: unknown strategy 'maxnet'"):
        sample(open_project(project_dir), 3)
    config.write_text(config.read_text().replace("strategy: maxnet", "strategy: maxent:dog"))
    write_run(project_dir, P)
    assert sample(open_project(project_dir), 1)["row"].tolist() == [4]


def test_badge_and_coreset_start_from_the_labelled_rows(project_dir):
    h = np.zeros((12, 2))
    h[:, 0] = np.arange(12)  # a line of points; rows 0 and 11 at its ends
    write_run(project_dir, P, h)
    project = open_project(project_dir)
    # Unlabelled, the line's end farther from the mean comes first (both ends tie: the earlier row).
    assert sample(project, 2, strategy="coreset")["row"].tolist() == [0, 11]
    project.label("../images/img_0000.png", cat=0, dog=0, bird=0)
    chosen = sample(project, 2, strategy="coreset")
    assert chosen["row"].tolist() == [11, 5]  # then the middle (rows 5 and 6 tie: the earlier row)
    assert chosen["score"].iloc[0] == pytest.approx(11)
    # badge: row 0 labelled; every other row's gradient embedding differs from it, so all are drawn.
    badge = sample(project, 11, strategy="badge", seed=0)
    assert sorted(badge["row"].tolist()) == list(range(1, 12)) and (badge["score"] >= 0).all()
    assert badge["row"].tolist() == sample(project, 11, strategy="badge", seed=0)["row"].tolist()
