"""Likely label errors: confident learning on out-of-fold predictions kept by train, ranked by
`sample --strategy disagree`, with the label each row has and the one the folds suggest."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import yaml
from builders import Cli
from sklearn.datasets import load_digits

from patchwork_cli.labelling.session import LabelSession
from patchwork_cli.sampling.confident_learning import rank_binary, rank_multiclass
from patchwork_cli.sampling.label_errors import describe, parse_suggestion, rank_labels
from patchwork_cli.store import runs
from patchwork_cli.store.project import Project

DIGITS = [f"d{k}" for k in range(10)]


def test_confident_learning_flags_the_confidently_other_rows_first():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    p = np.full((120, 3), 0.05)
    p[np.arange(120), labels] = 0.9
    wrong = np.array([3, 50, 97])  # labelled as one class, confidently another
    for row, other in zip(wrong, (1, 2, 0), strict=True):
        p[row] = 0.05
        p[row, other] = 0.9
    doubtful = 7  # unsure, not confidently another class
    p[doubtful] = [0.4, 0.35, 0.25]
    p += rng.uniform(0, 0.01, p.shape)
    ranking = rank_multiclass(labels, p / p.sum(axis=1, keepdims=True))
    assert set(np.flatnonzero(ranking.flagged)) == set(wrong)
    assert set(ranking.order()[:3]) == set(wrong) and ranking.order()[3] == doubtful
    assert ranking.suggested[wrong].tolist() == [1, 2, 0]


def test_confident_learning_flags_nothing_where_the_model_agrees_with_every_label():
    labels = np.array([0, 0, 1, 1])
    ranking = rank_binary(labels, np.array([0.1, 0.3, 0.7, 0.95]))
    assert not ranking.flagged.any()
    assert ranking.order().tolist() == [1, 2, 0, 3]  # least confident first: 1 - p(label) = .3, .3, .1, .05


def test_a_class_no_row_is_labelled_with_is_never_anyones_confident_class():
    ranking = rank_multiclass(np.array([0, 0, 0]), np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]))
    assert not ranking.flagged.any()  # class 1 has no threshold: no row is confidently of it


def test_multilabel_rows_are_as_doubtful_as_their_most_doubtful_class():
    nan = np.nan
    labels = np.array([[1, 0], [1, nan], [0, 1], [nan, 1], [1, 1]] * 8, dtype=float)
    p = np.where(np.isnan(labels), 0.5, np.where(labels == 1, 0.9, 0.1))
    p[2] = [0.95, 0.9]  # row 2 says "a=0": the model is sure of a
    ranking = rank_labels(p, labels, "multilabel")
    assert ranking.order()[0] == 2 and ranking.flagged[2]
    given, suggested = describe(p[[2]], labels[[2]], "multilabel", ["a", "b"])
    assert (given, suggested) == (["a=0"], ["a=1"])
    assert parse_suggestion("a=1", ["a", "b"]) == ("a", 1) and parse_suggestion("dog", ["dog"]) == ("dog", 1)
    assert parse_suggestion("size=1", ["size=1", "b"]) == ("size=1", 1)  # a multiclass class named so


def test_a_row_of_negatives_is_described_by_the_class_it_denies():
    p = np.array([[0.8, 0.1, 0.1]])
    assert describe(p, np.array([[0.0, np.nan, np.nan]]), "multiclass", ["a", "b", "c"]) == (["not a"], ["a"])


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory):
    """A real small project: 600 of scikit-learn's digits (8x8 scans) as 64-d features, 400
    training labels of which 40 are wrong, 100 clean validation labels, trained (flatten head)."""
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    rows = 600
    features, truth = digits.data[:rows].astype(np.float32), digits.target[:rows]
    paths = [f"img/{i:04d}.png" for i in range(rows)]
    (root / "list.txt").write_text("\n".join(paths) + "\n")
    cli = Cli(root)
    cli("init", "proj", "--images", "list.txt", "--classes", ",".join(DIGITS), "--task", "multiclass")
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["training"].update(epochs=30, batches_per_epoch=10)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    np.save(root / "features.npy", features)
    cli("--project", "proj", "extract", "--from-npy", "features.npy")
    rng = np.random.default_rng(0)
    given = truth[:500].copy()
    flipped = rng.choice(400, 40, replace=False)
    given[flipped] = (given[flipped] + rng.integers(1, 10, 40)) % 10
    edits = pd.DataFrame(np.eye(10, dtype=int)[given], columns=DIGITS)
    edits.insert(0, "filepath", paths[:500])
    edits["validation"] = np.arange(500) >= 400
    edits.to_csv(root / "edits.csv", index=False)
    cli("--project", "proj", "label", "--import", "edits.csv")
    cli("--project", "proj", "train")
    return root, flipped, given, truth


def test_train_keeps_out_of_sample_predictions_of_every_labelled_row(digits_project):
    root, flipped, given, truth = digits_project
    run = runs.resolve_run(root / "proj", None)
    folds = runs.read_out_of_fold(run)
    stored = Project(root / "proj").labels()["filepath"].tolist()
    assert sorted(folds) == stored[:500]  # the training rows (out of fold) and the validation rows
    p = np.stack([folds[path] for path in stored[:500]])
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    guess = p.argmax(axis=1)
    assert (guess == truth[:500]).mean() > 0.85  # a real model of the digits
    assert (guess[flipped] == given[flipped]).mean() < 0.2  # which has not learnt the wrong labels


def test_disagree_ranks_the_wrong_labels_first_and_says_what_they_should_be(digits_project):
    root, flipped, given, truth = digits_project
    result = Cli(root)("--project", "proj", "sample", "--strategy", "disagree", "-n", "40", "--format", "csv")
    chosen = pd.read_csv(io.StringIO(result.stdout))
    assert list(chosen.columns) == ["row", "filepath", "score", "rank", "strategy", "given", "suggested"]
    hits = set(chosen["row"]) & set(flipped.tolist())
    assert len(hits) >= 0.8 * 40, len(hits)  # the run's own predictions found 7 of 60 in the trial
    for row, was, suggested in zip(chosen["row"], chosen["given"], chosen["suggested"], strict=True):
        assert was == DIGITS[given[row]]
        if row in hits:
            assert suggested in DIGITS
    right = [row for row in hits if chosen.set_index("row").loc[row, "suggested"] == DIGITS[truth[row]]]
    assert len(right) >= 0.8 * len(hits)  # the suggestion is mostly the true digit


def test_a_run_without_out_of_fold_predictions_is_ranked_with_a_warning(digits_project, tmp_path):
    root, _, _, _ = digits_project
    run = runs.resolve_run(root / "proj", None)
    kept = (run / runs.OUT_OF_FOLD_FILE).read_bytes()
    (run / runs.OUT_OF_FOLD_FILE).unlink()
    try:
        result = Cli(root)("--project", "proj", "sample", "--strategy", "disagree", "-n", "5")
    finally:
        (run / runs.OUT_OF_FOLD_FILE).write_bytes(kept)
    assert len(result.stdout.splitlines()) == 5
    assert "has no out-of-fold predictions" in result.stderr and "train again" in result.stderr


def test_enter_accepts_the_suggested_label_in_the_window(digits_project):
    root, flipped, _, truth = digits_project
    project = Project(root / "proj")
    row = int(flipped[0])
    right = DIGITS[truth[row]]
    session = LabelSession(project, [row], suggestions={row: (right, 1)})
    assert session.current.suggestion == (right, 1)
    assert session.accept_suggestion()
    session.finish()
    labels = project.labels().iloc[row]
    assert [name for name in DIGITS if labels[name] == 1] == [right]
    assert all(labels[name] == 0 for name in DIGITS if name != right)  # one key: the image is that class
