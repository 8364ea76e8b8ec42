"""patchwork sample on the command line: formats, paths from any directory, errors, and
(as a real subprocess) that it never imports TensorFlow."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from builders import SAMPLE_PREDICTIONS as P
from builders import Cli, probe, snapshot, write_run

from patchwork_cli.cli.sample import FILTER_HELP
from patchwork_cli.sampling.sample import FILTERS

EXPECTED_MAXENT = [0, 5, 4]  # the rows of P with the most uncertain class, most uncertain first


def test_paths_work_from_the_current_directory(project_dir, cli):
    write_run(project_dir, P)
    inside = Cli(project_dir)("sample", "-n", "3", "--strategy", "maxent")
    assert inside.stdout == "".join(f"../images/img_{i:04d}.png\n" for i in EXPECTED_MAXENT)
    assert inside.stderr == ""
    outside = cli("--project", "proj", "sample", "-n", "3", "--strategy", "maxent")
    assert outside.stdout == "".join(f"images/img_{i:04d}.png\n" for i in EXPECTED_MAXENT)
    assert all((cli.cwd / line).is_file() for line in outside.stdout.split())


def test_csv_and_json_carry_row_filepath_score_and_rank(project_dir, cli):
    write_run(project_dir, P)
    result = cli("-C", "proj", "sample", "-n", "3", "-s", "maxent", "--format", "csv")
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table.columns.tolist() == ["row", "filepath", "score", "rank", "strategy"]
    assert table["row"].tolist() == EXPECTED_MAXENT and table["rank"].tolist() == [1, 2, 3]
    assert table["filepath"].tolist() == [f"images/img_{i:04d}.png" for i in EXPECTED_MAXENT]
    assert table["score"].iloc[0] == 1.0
    records = json.loads(cli("-C", "proj", "sample", "-n", "3", "-s", "maxent", "--format", "json").stdout)
    assert [r["row"] for r in records] == EXPECTED_MAXENT and records[0]["rank"] == 1
    assert records[0] == {"row": 0, "filepath": "images/img_0000.png", "score": 1.0, "rank": 1, "strategy": "maxent"}


def test_defaults_filters_and_seed(project_dir, cli):
    # No model or features needed for the default strategy (auto: random before any extract) and
    # n (50, more than the 12 images).
    assert len(cli("-C", "proj", "sample").stdout.split()) == 12
    first = cli("-C", "proj", "sample", "-n", "4", "--seed", "1").stdout
    assert first == cli("-C", "proj", "sample", "-n", "4", "--seed", "1").stdout and len(first.split()) == 4
    (cli.cwd / "e.csv").write_text("filepath,cat,dog\nimages/img_0003.png,1,0\nimages/img_0007.png,0,\n")
    cli("-C", "proj", "label", "--import", "e.csv")
    contains = cli("-C", "proj", "sample", "--from", "partial", "--from", "contains:cat").stdout
    assert contains == "images/img_0003.png\n"
    write_run(project_dir, P)
    result = cli("-C", "proj", "sample", "-s", "disagree", "--format", "csv")
    disagree = pd.read_csv(io.StringIO(result.stdout))
    assert disagree["row"].tolist() == [7, 3]  # cat 0 at p = 0.1, then cat 1 at 0.99 and dog 0 at 0.01
    np.testing.assert_allclose(disagree["score"], [0.1, 0.01], rtol=1e-6)


def test_nothing_to_sample_is_not_an_error(project_dir, cli):
    result = cli("-C", "proj", "sample", "--from", "labeled")
    assert result.stdout == "" and result.stderr == "nothing to sample: no row matches --from labeled\n"
    write_run(project_dir, P)
    result = cli("-C", "proj", "sample", "-s", "disagree")  # nothing is labelled yet
    assert result.stdout == "" and result.stderr == "nothing to sample: no row matches the default --from\n"


def test_rows_without_predictions_are_left_out_with_a_warning(project_dir, cli):
    write_run(project_dir, np.where(np.arange(12)[:, None] < 2, np.nan, P))
    result = cli("-C", "proj", "sample", "-s", "maxent", "-n", "1")
    assert result.stdout == "images/img_0005.png\n"
    assert result.stderr.startswith("warning: 2 candidate row(s) have no predictions in run 20260101-000000-0001")


def test_errors_are_one_line_and_change_nothing(project_dir, cli):
    before = snapshot(project_dir)
    cases = [
        (
            ["-s", "maxent"],
            "error: no trained model yet: strategy 'maxent' ranks images by a model's predictions; "
            "run 'patchwork train' first (or use --strategy random)",
        ),
        (
            ["-s", "uncertain"],
            "error: unknown strategy 'uncertain'; strategies: random, maxent, maxent+sum, "
            "maxent:C, high:C, low:C, badge, coreset, disagree, margin, cluster-margin, typiclust, probcover, auto "
            "(C a class)",
        ),
        (["-s", "high:cta"], "error: unknown class 'cta' (did you mean 'cat'?); classes: cat, dog, bird"),
        (["--from", "lacks:zebra"], "error: unknown class 'zebra'; classes: cat, dog, bird"),
        (
            ["--from", "unlabelled"],
            "error: unknown filter 'unlabelled' (did you mean 'unlabeled'?); filters: "
            "unlabeled, partial, labeled, all, excluded, validation, unlabeled:C, contains:C, lacks:C, subset:V "
            "(C a class, V a subset value)",
        ),
    ]
    for args, message in cases:
        result = cli("-C", "proj", "sample", *args, expect=1)
        assert result.stderr == message + "\n" and result.stdout == "", args
    write_run(project_dir, P)
    result = cli("-C", "proj", "sample", "-s", "maxent", "--run", "nope", expect=1)
    assert result.stderr == "error: unknown run 'nope'; runs: 20260101-000000-0001\n"
    for args in (["-n", "0"], ["--format", "xml"]):
        assert "Invalid value" in cli("-C", "proj", "sample", *args, expect=2).stderr
    assert {k: v for k, v in snapshot(project_dir).items() if not k.startswith("models")} == before


@pytest.mark.slow
def test_sample_does_not_import_tensorflow(project_dir):
    write_run(project_dir, P)
    report = probe("sample", "-s", "badge", "-n", "3", "--seed", "0", cwd=project_dir)
    assert report["code"] in (0, None) and not report["tensorflow"]


def test_help_names_every_filter():  # the strategies' help: tests/test_architecture.py
    assert FILTER_HELP == ", ".join(FILTERS)
