"""Metrics on partly labelled data, the text tables and the diagnostic plots (no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchwork_cli.evaluation.metrics import compute_metrics
from patchwork_cli.evaluation.plots import plot_class_histograms, plot_learning_curve, safe_file_stems
from patchwork_cli.evaluation.tables import format_metrics_table, runs_table
from patchwork_cli.store.run_metrics import RunMetrics

nan = np.nan

# Two classes, eight rows, by hand.
#
# row  validation  exclude   p_cat  y_cat   p_dog  y_dog
#  0   no          no        0.9    1       0.2    0
#  1   no          no        0.7    0       0.6    1
#  2   no          no        0.4    1       0.8    -      (dog unlabelled)
#  3   no          no        NaN    0       NaN    1      (no features: ignored)
#  4   yes         no        0.8    1       0.4    0
#  5   yes         no        0.3    1       0.6    0
#  6   yes         no        0.1    -       0.7    -      (unlabelled)
#  7   yes         yes       0.05   1       0.95   0      (excluded: would make validation AUCs defined)
PROBABILITIES = np.array(
    [
        [0.9, 0.2],
        [0.7, 0.6],
        [0.4, 0.8],
        [nan, nan],
        [0.8, 0.4],
        [0.3, 0.6],
        [0.1, 0.7],
        [0.05, 0.95],
    ]
)
LABELS = np.array(
    [
        [1, 0],
        [0, 1],
        [1, nan],
        [0, 1],
        [1, 0],
        [1, 0],
        [nan, nan],
        [1, 0],
    ],
    dtype=float,
)
VALIDATION = np.array([False, False, False, False, True, True, True, True])
EXCLUDE = np.array([False] * 7 + [True])
CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def metrics():
    return compute_metrics(PROBABILITIES, LABELS, VALIDATION, EXCLUDE, CLASSES)


@pytest.mark.slow
def test_training_metrics_by_hand(metrics):
    cat = asdict(metrics.train.classes["cat"])
    # cat, training cells rows 0-2 (row 3 has no prediction): y = 1, 0, 1; p = .9, .7, .4
    # ROC AUC: positive/negative pairs (.9 > .7) yes, (.4 > .7) no -> 1/2
    # AP: by descending score .9 (pos) .7 (neg) .4 (pos): precision at each positive 1/1 and 2/3,
    #     each adding recall 1/2 -> 0.5 * 1 + 0.5 * 2/3 = 5/6
    # threshold .5 -> predictions 1, 1, 0: TP 1 (row 0), FP 1 (row 1), FN 1 (row 2), TN 0
    # accuracy 1/3, precision 1/2, recall 1/2, F1 1/2
    assert cat == {
        "roc_auc": pytest.approx(0.5),
        "average_precision": pytest.approx(5 / 6),
        "accuracy": pytest.approx(1 / 3),
        "precision": pytest.approx(0.5),
        "recall": pytest.approx(0.5),
        "f1": pytest.approx(0.5),
        "positives": 2,
        "negatives": 1,
    }
    dog = asdict(metrics.train.classes["dog"])
    # dog, training cells rows 0-1 (row 2 unlabelled, row 3 no prediction): y = 0, 1; p = .2, .6
    # perfectly ranked and thresholded: everything 1, accuracy 2/2
    assert dog == {
        "roc_auc": 1.0,
        "average_precision": 1.0,
        "accuracy": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "positives": 1,
        "negatives": 1,
    }
    # macro: mean of cat and dog
    assert asdict(metrics.train.macro) == {
        "roc_auc": pytest.approx(0.75),
        "average_precision": pytest.approx((5 / 6 + 1) / 2),
        "accuracy": pytest.approx((1 / 3 + 1) / 2),
        "precision": pytest.approx(0.75),
        "recall": pytest.approx(0.75),
        "f1": pytest.approx(0.75),
    }


def test_validation_metrics_by_hand_with_undefined_ones(metrics):
    cat = asdict(metrics.validation.classes["cat"])
    # cat, validation cells rows 4-5 (row 6 unlabelled, row 7 excluded): y = 1, 1; p = .8, .3
    # no negatives -> ROC AUC undefined; AP with only positives: precision is 1 everywhere -> 1
    # predictions 1, 0: TP 1, FN 1 -> accuracy 1/2, precision 1/1, recall 1/2, F1 2*1*.5/1.5 = 2/3
    assert cat == {
        "roc_auc": None,
        "average_precision": 1.0,
        "accuracy": 0.5,
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "positives": 2,
        "negatives": 0,
    }
    dog = asdict(metrics.validation.classes["dog"])
    # dog, validation cells rows 4-5: y = 0, 0; p = .4, .6 -> no positives: AUC, AP, recall, F1 undefined
    # predictions 0, 1: accuracy 1/2; precision TP 0 / predicted 1 = 0
    assert dog == {
        "roc_auc": None,
        "average_precision": None,
        "accuracy": 0.5,
        "precision": 0.0,
        "recall": None,
        "f1": None,
        "positives": 0,
        "negatives": 2,
    }
    # macro over the classes where defined: AUC nowhere; AP, recall and F1 only cat's
    assert asdict(metrics.validation.macro) == {
        "roc_auc": None,
        "average_precision": 1.0,
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
    }


def test_metrics_are_plain_json_without_nan(metrics):
    text = json.dumps(metrics.as_dict(), allow_nan=False)  # raises on NaN or numpy types
    assert json.loads(text) == metrics.as_dict()
    assert RunMetrics.from_dict(json.loads(text)) == metrics

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        else:
            assert value is None or type(value) in (int, float), (value, type(value))

    walk(metrics.as_dict())
    assert set(metrics.as_dict()) == {"validation", "train", "agreement"}  # no agreement until a run compares


def test_older_metrics_files_read_and_are_written_back_unchanged(tmp_path, metrics):
    # a run trained before runs recorded their agreement: no such key, and none written back
    older = {part: scores for part, scores in metrics.as_dict().items() if part != "agreement"}
    (tmp_path / "metrics.json").write_text(json.dumps(older, indent=2) + "\n")
    before = (tmp_path / "metrics.json").read_bytes()
    record = RunMetrics.read(tmp_path)
    assert record.agreement is None and record.validation == metrics.validation
    assert record.as_dict() == older
    record.write(tmp_path)
    assert (tmp_path / "metrics.json").read_bytes() == before
    # keys missing read as their defaults, keys this version does not know are ignored
    sparse = RunMetrics.from_dict({"validation": {"classes": {"cat": {"positives": 2, "later": 1}}}, "later": {}})
    assert sparse.validation.classes["cat"].positives == 2 and sparse.validation.classes["cat"].negatives == 0
    assert sparse.validation.classes["cat"].roc_auc is None and sparse.validation.has_labels
    assert not sparse.train.has_labels and sparse.train.multiclass is None


def test_rows_without_predictions_are_ignored(metrics):
    # Dropping row 3 (NaN probabilities) changes nothing.
    keep = np.arange(8) != 3
    without = compute_metrics(PROBABILITIES[keep], LABELS[keep], VALIDATION[keep], EXCLUDE[keep], CLASSES)
    assert without == metrics
    # A NaN in one class only ignores that cell, not the row's other class.
    probabilities = PROBABILITIES.copy()
    probabilities[0, 0] = nan
    partial = compute_metrics(probabilities, LABELS, VALIDATION, EXCLUDE, CLASSES)
    assert partial.train.classes["cat"].positives == 1
    assert partial.train.classes["dog"] == metrics.train.classes["dog"]


def test_excluded_rows_are_never_evaluated():
    everything_excluded = compute_metrics(PROBABILITIES, LABELS, VALIDATION, np.ones(8, bool), CLASSES)
    assert not everything_excluded.train.has_labels and not everything_excluded.validation.has_labels
    included = compute_metrics(PROBABILITIES, LABELS, VALIDATION, np.zeros(8, bool), CLASSES)
    # row 7 (cat positive at .05, dog negative at .95) now counts and makes both AUCs defined
    assert included.validation.classes["cat"].negatives == 0
    assert included.validation.classes["cat"].positives == 3
    assert included.validation.classes["dog"].negatives == 3


def test_no_labels_gives_none_everywhere():
    unlabelled = np.full_like(LABELS, nan)
    result = compute_metrics(PROBABILITIES, unlabelled, VALIDATION, EXCLUDE, CLASSES)
    for part in (result.validation, result.train):
        assert not part.has_labels
        assert all(value is None for value in asdict(part.macro).values())
        for values in part.classes.values():
            assert values.positives == values.negatives == 0
            assert values.roc_auc is values.average_precision is values.accuracy is values.f1 is None
    assert "no validation labels" in format_metrics_table(result)
    assert "no training labels" in format_metrics_table(result)


def test_empty_project_and_bad_shapes():
    empty = compute_metrics(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, bool), np.zeros(0, bool), CLASSES)
    assert empty.validation.macro.roc_auc is None
    with pytest.raises(ValueError):
        compute_metrics(PROBABILITIES, LABELS[:, :1], VALIDATION, EXCLUDE, CLASSES)
    with pytest.raises(ValueError):
        compute_metrics(PROBABILITIES, LABELS, VALIDATION[:3], EXCLUDE, CLASSES)
    with pytest.raises(ValueError):
        compute_metrics(PROBABILITIES, LABELS, VALIDATION, EXCLUDE, ["cat"])


def test_threshold_is_used():
    # at .35 row 2 (cat .4, positive) is predicted positive too: TP 2, FP 1 -> recall 1, precision 2/3
    result = compute_metrics(PROBABILITIES, LABELS, VALIDATION, EXCLUDE, CLASSES, threshold=0.35)
    cat = result.train.classes["cat"]
    assert cat.recall == 1.0 and cat.precision == pytest.approx(2 / 3)


def test_table_shows_both_parts(metrics):
    table = format_metrics_table(metrics)
    lines = table.splitlines()
    assert "validation" in lines[0] and "training" in lines[0]
    cat = next(line for line in lines if line.startswith("cat "))
    # validation: AUC undefined, AP 1, F1 2/3, 2 pos, 0 neg; training: .5, 5/6, .5, 2, 1
    assert cat.split() == ["cat", "-", "1.000", "0.667", "2", "0", "0.500", "0.833", "0.500", "2", "1"]
    macro = next(line for line in lines if line.startswith("macro"))
    assert macro.split() == ["macro", "-", "1.000", "0.667", "2", "2", "0.750", "0.917", "0.750", "3", "2"]
    assert "None" not in table and "nan" not in table
    assert "no validation labels" not in table


def test_table_without_validation_labels_says_so():
    labels = LABELS.copy()
    labels[VALIDATION] = nan
    table = format_metrics_table(compute_metrics(PROBABILITIES, labels, VALIDATION, EXCLUDE, CLASSES))
    assert "no validation labels: mark some labelled images as validation" in table
    header = next(line for line in table.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "AUC", "AP", "F1", "pos", "neg"]  # only the training columns
    assert "None" not in table


def test_runs_table():
    runs = [
        {
            "run_id": "20261129-073612-3f9a",
            "labels": 40,
            "val_macro_auc": None,
            "val_macro_ap": None,
            "train_macro_auc": 0.99,
        },
        {
            "run_id": "20261130-080000-0b1c",
            "labels": 120,
            "val_macro_auc": 0.9123,
            "val_macro_ap": 0.8,
            "train_macro_auc": 0.97,
            "kappa": 0.8571,
        },
    ]
    lines = runs_table(runs).splitlines()
    assert lines[0].split() == ["run", "labels", "val", "AUC", "val", "AP", "train", "AUC", "kappa", "vs", "previous"]
    assert lines[1].split() == ["20261129-073612-3f9a", "40", "-", "-", "0.990", "-"]
    assert lines[2].split() == ["20261130-080000-0b1c", "120", "0.912", "0.800", "0.970", "0.857"]
    assert "no runs" in runs_table([])


def _check_png(path: Path, size: tuple[int, int] | None = None) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert image.width >= 600 and image.height >= 300
        if size:
            assert image.size == size


def test_safe_file_stems():
    assert safe_file_stems(["cat", "dog/wolf", "a b", "..", "A b", "ünï"]) == [
        "cat",
        "dog_wolf",
        "a_b",
        "class",
        "A_b_2",
        "uni",
    ]


@pytest.mark.slow
def test_class_histograms(tmp_path):
    classes = ["cat/dog", "a b:c", "../etc"]
    rng = np.random.default_rng(1)
    n = 200
    probabilities = rng.beta(2, 2, (n, 3))
    probabilities[:5] = nan
    labels = np.where(rng.random((n, 3)) < probabilities, 1.0, 0.0)
    labels[rng.random((n, 3)) < 0.5] = nan
    labels[:, 2] = nan  # a class with no labels at all still gets a plot
    validation = rng.random(n) < 0.3
    exclude = rng.random(n) < 0.05
    out = tmp_path / "reports" / "run"
    paths = plot_class_histograms(probabilities, labels, validation, exclude, classes, out)
    assert [p.name for p in paths] == ["hist_cat_dog.png", "hist_a_b_c.png", "hist_etc.png"]
    assert all(p.parent == out for p in paths)
    for path in paths:
        _check_png(path, (1100, 440))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    # Rewriting replaces the files in place.
    again = plot_class_histograms(probabilities, labels, validation, exclude, classes, out)
    assert again == paths and len(list(out.iterdir())) == 3


@pytest.mark.slow
def test_learning_curve(tmp_path):
    runs = [
        {"run_id": "20261129-0736", "labels": 20, "val_macro_auc": None, "train_macro_auc": 0.99},
        {"run_id": "20261129-0800", "labels": 60, "val_macro_auc": 0.71, "train_macro_auc": 0.97},
        {"run_id": "20261129-0900", "labels": 120, "val_macro_auc": 0.82, "train_macro_auc": None},
        {"run_id": "20261129-0930", "labels": 120, "val_macro_auc": 0.80, "train_macro_auc": 0.95},
        {"run_id": "20261129-1000", "labels": 200, "val_macro_auc": 0.3, "train_macro_auc": 0.95},
    ]
    path = plot_learning_curve(runs, tmp_path / "reports" / "learning_curve.png")
    assert path == tmp_path / "reports" / "learning_curve.png"
    _check_png(path, (800, 500))
    _check_png(plot_learning_curve(runs[:1], tmp_path / "none.png"))
    _check_png(plot_learning_curve([], tmp_path / "empty.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "none.png", "reports"]


def test_import_is_light():
    code = (
        "import sys, patchwork_cli.evaluation.metrics, patchwork_cli.evaluation.tables, "
        "patchwork_cli.evaluation.plots; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn', 'matplotlib', 'matplotlib.pyplot') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
