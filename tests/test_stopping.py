"""When to stop: consecutive runs' agreement on the unlabelled images (Cohen's kappa), in
evaluate and as a hint in status (Bloodgood & Vijay-Shanker 2009)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import Cli, feature_project

from patchwork_cli.evaluation.metrics import prediction_agreement

pytestmark = pytest.mark.slow


def test_kappa_of_predicted_classes():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert prediction_agreement(a, a, "multiclass") == 1.0
    flipped = a[:, ::-1]
    assert prediction_agreement(a, flipped, "multiclass") == pytest.approx(-1.0)
    # one of four top classes differs: po = 0.75, pe = 0.5 -> kappa 0.5
    b = a.copy()
    b[2] = [0.4, 0.6]
    assert prediction_agreement(a, b, "multiclass") == pytest.approx(0.5)
    # multilabel: per class at 0.5, averaged (class 0 as above; class 1 the mirror image)
    assert prediction_agreement(a, b, "multilabel") == pytest.approx(0.5)
    with_nan = np.vstack([a, [np.nan, np.nan]])
    assert prediction_agreement(with_nan, np.vstack([a, [0.5, 0.5]]), "multiclass") == 1.0
    assert prediction_agreement(a[:1], a[:1], "multiclass") is None


@pytest.mark.tensorflow
def test_evaluate_reports_agreement_and_status_hints_when_runs_stop_changing(tmp_path):
    project, _ = feature_project(tmp_path)
    cli = Cli(project)
    cli("train")
    first = json.loads(cli("evaluate", "--json").stdout)
    assert first["agreement"] is None  # nothing to compare the first run with
    assert "predict the unlabelled images alike" not in cli("status").stdout
    for _ in range(2):  # same labels, same seed: the same predictions again
        cli("train")
    latest = json.loads(cli("evaluate", "--json").stdout)
    assert latest["agreement"]["kappa"] == 1.0 and latest["agreement"]["rows"] == 40  # 120 rows, 80 labelled
    assert "Cohen's kappa 1.000" in cli("evaluate").stdout
    assert (
        "the last 3 runs predict the unlabelled images alike (Cohen's kappa 1.000, 1.000 >= 0.99)"
        in cli("status").stdout
    )
    assert "kappa vs previous" in cli("evaluate", "--runs").stdout
