"""patchwork predict: CSV probabilities for image files from a project's run or an exported model,
batched, with unreadable images as empty rows; the same numbers as the run's own predictions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Cli
from test_export import CLASSES, build_trained_project, run_predictions


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    project = build_trained_project(tmp_path_factory.mktemp("predict"))
    Cli(project)("export", "--out", "../deploy", "--what", "model")
    return project


def read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def test_predict_on_a_directory_gives_the_runs_numbers(trained):
    result = Cli(trained.parent)("--project", "proj", "predict", "images")
    table = read_csv(result.stdout)
    assert list(table.columns) == ["filepath", *CLASSES]
    # the project's rows are the directory's files in the same (sorted) order, broken.png first
    assert table["filepath"][0] == "images/broken.png" and table.iloc[0, 1:].isna().all()
    assert "warning: images/broken.png: not an image" in result.stderr
    assert "predicted 30 image(s); 1 unreadable (empty rows)" in result.stderr
    difference = np.nanmax(np.abs(table[CLASSES].to_numpy() - run_predictions(trained)))
    print(f"predict on the directory: max |predict - run| = {difference:.2e}")
    assert difference < 1e-3


def test_an_exported_model_works_outside_any_project(trained, tmp_path):
    images = sorted((trained.parent / "images").glob("img_*.png"))
    listed = "\n".join(str(p) for p in reversed(images)) + "\n/no/such/image.png\n"
    result = Cli(tmp_path)("predict", "--model", trained.parent / "deploy", "--images", "-", input=listed)
    table = read_csv(result.stdout)
    assert table["filepath"].tolist() == [*map(str, reversed(images)), "/no/such/image.png"]
    assert table.iloc[-1, 1:].isna().all() and "warning: /no/such/image.png: file not found" in result.stderr
    np.testing.assert_allclose(table[CLASSES].to_numpy()[:-1], run_predictions(trained)[1:][::-1], atol=1e-3)


def test_batch_size_does_not_change_the_numbers(trained):
    first, second = (
        read_csv(Cli(trained.parent)("--project", "proj", "predict", "images", "--batch-size", size).stdout)
        for size in ("4", "64")
    )
    pd.testing.assert_frame_equal(first, second)


def test_predict_errors(trained, tmp_path):
    cli = Cli(trained)
    assert "no images" in cli("predict", expect=2).stderr
    assert "not both" in cli("predict", "x.png", "--run", "r", "--model", "d", expect=2).stderr
    unknown = cli("predict", "../images", "--run", "nope", expect=1)
    assert unknown.stderr.startswith("error: unknown run 'nope'; runs: ") and unknown.stdout == ""
    not_exported = Cli(tmp_path)("predict", "x.png", "--model", ".", expect=1)
    assert (
        not_exported.stderr
        == "error: .: not an exported patchwork model (no model_card.json); see 'patchwork export'\n"
    )
    outside = Cli(tmp_path)("predict", "x.png", expect=1)
    assert outside.stderr.startswith("error: not inside a patchwork project")
