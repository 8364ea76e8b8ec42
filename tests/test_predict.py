"""patchwork predict: CSV probabilities for image files from a project's run (its extractor on the
inference engine, its head on Keras) or an exported model (its model.tflite on the engine, model.keras
without one), batched, with unreadable images as empty rows; the numbers of the Keras models."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from builders import IMSHAPE, Cli, copy_of_project, run_predictions, trained_project
from builders import TRAINED_CLASSES as CLASSES

from patchwork_cli import open_project
from patchwork_cli.deploy.model import end_to_end_model
from patchwork_cli.store import runs
from patchwork_cli.util.images import load_image

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    project = trained_project(tmp_path_factory.mktemp("predict"))
    Cli(project)("export", "--out", "../deploy", "--what", "model")
    return project


def read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def images_of(project: Path) -> list[Path]:
    return sorted((project.parent / "images").glob("img_*.png"))


def keras_predictions(model, paths: list[Path]) -> np.ndarray:
    return np.asarray(model.predict_on_batch(np.stack([load_image(str(p), IMSHAPE, 3) for p in paths])))


@pytest.mark.slow
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


def test_a_run_predicts_as_its_end_to_end_keras_model(trained):
    """The extractor on LiteRT, its features rounded to the store's float16, the head on Keras: the
    probabilities of the one Keras model export writes, within 1e-4."""
    result = Cli(trained.parent)("--project", "proj", "predict", "images")
    assert "(the extractor on litert, exact, the head on keras)" in result.stderr
    model = end_to_end_model(open_project(trained), runs.resolve_run(trained, None))
    expected = keras_predictions(model, images_of(trained))
    np.testing.assert_allclose(read_csv(result.stdout)[CLASSES].to_numpy()[1:], expected, rtol=0, atol=1e-4)


def test_an_exported_model_runs_its_tflite(trained):
    images = images_of(trained)
    deploy = trained.parent / "deploy"
    result = Cli(trained.parent)("predict", "--model", deploy, *images)
    assert "(model.tflite on litert)" in result.stderr and "note:" not in result.stderr
    expected = keras_predictions(keras.models.load_model(deploy / "model.keras"), images)
    np.testing.assert_allclose(read_csv(result.stdout)[CLASSES].to_numpy(), expected, rtol=0, atol=1e-4)


def test_predict_with_a_tflite_never_starts_tensorflow(trained):
    """A fresh process: `predict --model DIR` on model.tflite runs LiteRT alone, without TensorFlow."""
    images = [str(p) for p in images_of(trained)[:3]]
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from patchwork_cli.cli.app import app\n"
        f"result = CliRunner().invoke(app, ['predict', '--model', {str(trained.parent / 'deploy')!r}, *{images!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(result.stdout.count(chr(10)), 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert child.stdout.split() == ["4", "False", "False"]


def test_without_an_inference_engine_keras_runs_both(trained, monkeypatch):
    for package in ("ai_edge_litert", "openvino"):
        monkeypatch.setitem(sys.modules, package, None)  # how Python marks a module as not importable
    images = images_of(trained)
    exported = Cli(trained.parent)("predict", "--model", "deploy", *images)
    assert "note: no inference engine installed (pip install ai-edge-litert): Keras runs model.keras" in (
        exported.stderr
    )
    assert "(model.keras on keras)" in exported.stderr
    from_run = Cli(trained.parent)("--project", "proj", "predict", *images)
    assert "note: no inference engine installed (pip install ai-edge-litert): Keras runs the extractor" in (
        from_run.stderr
    )
    assert "(the extractor on keras, exact, the head on keras)" in from_run.stderr
    expected = keras_predictions(keras.models.load_model(trained.parent / "deploy" / "model.keras"), images)
    for result in (exported, from_run):
        np.testing.assert_allclose(read_csv(result.stdout)[CLASSES].to_numpy(), expected, rtol=0, atol=1e-5)


def test_an_export_without_tflite_runs_on_keras(trained, tmp_path):
    """A directory exported before model.tflite existed."""
    deploy = tmp_path / "old"
    shutil.copytree(trained.parent / "deploy", deploy, ignore=shutil.ignore_patterns("model.tflite"))
    images = images_of(trained)
    result = Cli(tmp_path)("predict", "--model", deploy, *images)
    assert "note: no model.tflite (exported by an older patchwork): Keras runs model.keras" in result.stderr
    expected = keras_predictions(keras.models.load_model(deploy / "model.keras"), images)
    np.testing.assert_allclose(read_csv(result.stdout)[CLASSES].to_numpy(), expected, rtol=0, atol=1e-6)


def test_a_run_of_another_extractor_is_refused(trained, tmp_path):
    """The project's extractor.keras replaced by another model after the run was trained on its features."""
    project = copy_of_project(trained, tmp_path)
    inputs = keras.Input((*IMSHAPE, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(32, 3, strides=2, padding="same")(inputs))
    other.save(project.parent / "extractor.keras")
    run_id = (project / "models" / "LATEST").read_text().strip()
    for command in (["predict", "../images"], ["export", "--out", "../deploy", "--what", "model"]):
        result = Cli(project)(*command, expect=1)
        assert result.stderr.startswith(
            f"error: run {run_id} was trained on features of another extractor than '../extractor.keras' "
            "(weights_sha256: '"
        ), result.stderr
        assert result.stderr.endswith("restore the extractor the run was trained with to use it\n")
    assert not (tmp_path / "copy" / "deploy").exists()


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
