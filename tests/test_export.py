"""patchwork export: labels and predictions as CSV, the end-to-end model as .keras, SavedModel and
.tflite (reloaded in a fresh process; the .tflite checked against the .keras when written), the model
card, and the refusals (unknown run, non-empty directory, a .tflite that strays)."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from builders import IMSHAPE, Cli, copy_of_project, feature_project, probe, run_predictions, snapshot, trained_project
from builders import TRAINED_CLASSES as CLASSES

from patchwork_cli import PatchworkError, open_project
from patchwork_cli.deploy.model import end_to_end_model, without_lambdas
from patchwork_cli.extractors import conversion
from patchwork_cli.store import runs
from patchwork_cli.util.images import load_image

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_project(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    Cli(trained)("export", "--out", "../deploy")
    return trained.parent / "deploy"


@pytest.mark.slow
def test_export_writes_model_card_labels_and_predictions(trained, exported):
    run_id = (trained / "models" / "LATEST").read_text().strip()
    names = sorted(p.name for p in exported.iterdir())
    assert names == [
        "labels.csv",
        "model.keras",
        "model.tflite",
        "model_card.json",
        "model_card.md",
        "predictions.csv",
        "saved_model",
    ]

    labels = pd.read_csv(exported / "labels.csv", keep_default_na=False)
    assert list(labels.columns) == ["filepath", "exclude", "validation", "subset", *CLASSES]
    assert labels["filepath"][0] == "../images/broken.png"  # relative to the export directory
    table = open_project(trained).labels()
    assert labels["a"].replace("", np.nan).astype(float).equals(table["a"])

    predictions = pd.read_csv(exported / "predictions.csv")
    assert list(predictions.columns) == ["filepath", *CLASSES]
    expected = run_predictions(trained)
    assert np.isnan(expected[0]).all() and predictions.iloc[0, 1:].isna().all()  # broken.png has none
    np.testing.assert_allclose(predictions[CLASSES].to_numpy(), expected, rtol=1e-5, equal_nan=True)

    card = json.loads((exported / "model_card.json").read_text())
    run_dir = trained / "models" / run_id
    assert card["classes"] == CLASSES and card["input"]["shape"] == [*IMSHAPE, 3]
    assert card["extractor"]["name"] == "extractor.keras" and card["extractor"]["pooling"] == "avg"
    assert card["metrics"] == json.loads((run_dir / "metrics.json").read_text())
    assert card["label_counts"] == json.loads((run_dir / "label_counts.json").read_text())
    assert card["model"] == f"patchwork run {run_id}" and card["exported"][:4].isdigit()
    markdown = (exported / "model_card.md").read_text()
    assert f"# patchwork run {run_id}" in markdown and "a, b" in markdown and "macro" in markdown

    tflite = card["tflite"]
    assert card["files"]["tflite"] == tflite["file"] == "model.tflite"
    assert tflite["sha256"] == hashlib.sha256((exported / "model.tflite").read_bytes()).hexdigest()
    assert tflite["checked_on"] == "litert" and tflite["max_abs_difference"] <= tflite["tolerance"] == 1e-4
    assert f"`model.tflite` (LiteRT / TFLite, SHA-256 {tflite['sha256'][:12]}..." in markdown


# Loads the three exported forms in a fresh interpreter and prints their predictions for the images;
# model.tflite on LiteRT's own interpreter, as a phone app would run it.
RELOAD = """
import json, sys
import numpy as np, keras, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from patchwork_cli.util.images import load_image
directory, size, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
pixels = np.stack([load_image(p, (size, size), 3) for p in paths])
from_keras = keras.models.load_model(directory + "/model.keras").predict_on_batch(pixels)
serving = tf.saved_model.load(directory + "/saved_model").signatures["serving_default"]
from_saved = serving(pixels=tf.constant(pixels))["output_0"].numpy()
interpreter = Interpreter(model_path=directory + "/model.tflite")
source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
interpreter.resize_tensor_input(source["index"], pixels.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(source["index"], pixels)
interpreter.invoke()
from_tflite = interpreter.get_tensor(target["index"])
print(json.dumps({"keras": np.asarray(from_keras).tolist(), "saved_model": from_saved.tolist(),
                  "tflite": from_tflite.tolist()}))
"""


def assert_reloaded_models_reproduce(directory: Path, size: int, paths: list[str], expected: np.ndarray) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(directory), str(size), *paths], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    outputs = {form: np.array(values) for form, values in json.loads(result.stdout).items()}
    for form in ("keras", "saved_model", "tflite"):
        difference = np.abs(outputs[form] - expected).max()
        print(f"{form}: max |exported - run| = {difference:.2e}")
        assert difference < 1e-3, form
    difference = np.abs(outputs["tflite"] - outputs["keras"]).max()
    print(f"max |model.tflite - model.keras| = {difference:.2e}")
    assert difference <= 1e-4


@pytest.mark.slow
def test_exported_models_reproduce_the_run_in_a_fresh_process(trained, exported):
    paths = sorted(str(p) for p in (trained.parent / "images").glob("img_*.png"))
    assert_reloaded_models_reproduce(exported, IMSHAPE[0], paths, run_predictions(trained)[1:])  # 0 is broken.png


DIGITS = sorted((Path(__file__).resolve().parents[1] / "examples" / "digits" / "images").glob("*.png"))[:16]


@pytest.fixture(scope="module")
def default_extractor_export(tmp_path_factory) -> Path:
    """A project on EfficientNet-Lite0 (the bundled default) over 16 real digit images at 64x64, trained
    and exported (the one conversion of Lite0 to TFLite for export in these tests)."""
    root = tmp_path_factory.mktemp("lite0")
    (root / "list.txt").write_text("\n".join(map(str, DIGITS)))
    Cli(root)("init", "proj", "--images", "list.txt", "--classes", ",".join(CLASSES))
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["imshape"] = [64, 64]
    config["training"].update(epochs=2, batches_per_epoch=5, batch_size=8)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame({"filepath": map(str, DIGITS[:10]), "a": [0, 1] * 5, "b": [1, 1, 0] * 3 + [0]}).to_csv(
        root / "edits.csv", index=False
    )
    Cli(project)("extract")
    Cli(project)("label", "--import", "../edits.csv")
    Cli(project)("train")
    Cli(project)("export", "--out", "../deploy", "--what", "model")
    return project


@pytest.mark.slow
def test_the_default_extractor_exports_without_custom_objects(default_extractor_export):
    project = default_extractor_export
    card = json.loads((project.parent / "deploy" / "model_card.json").read_text())
    assert card["extractor"]["name"] == "efficientnet_lite0" and card["input"]["shape"] == [64, 64, 3]
    assert card["tflite"]["checked_on"] == "litert"
    assert_reloaded_models_reproduce(project.parent / "deploy", 64, list(map(str, DIGITS)), run_predictions(project))


@pytest.mark.slow
def test_predict_with_the_default_extractor_gives_its_keras_models_numbers(default_extractor_export):
    """predict --model runs model.tflite, predict from the run runs the extractor on LiteRT: both
    within 1e-4 of the Keras models (the exported one, and the end-to-end one of the run)."""
    project = default_extractor_export
    pixels = np.stack([load_image(str(path), (64, 64), 3) for path in DIGITS])
    from_keras = np.asarray(keras.models.load_model(project.parent / "deploy" / "model.keras").predict_on_batch(pixels))
    end_to_end = end_to_end_model(open_project(project), runs.resolve_run(project, None))
    np.testing.assert_allclose(end_to_end.predict_on_batch(pixels), from_keras, rtol=0, atol=1e-6)

    listed = "\n".join(map(str, DIGITS))
    exported = Cli(project.parent)("predict", "--model", "deploy", "--images", "-", input=listed)
    from_run = Cli(project)("predict", "--images", "-", input=listed)
    assert "(model.tflite on litert)" in exported.stderr
    assert "(the extractor on litert, exact, the head on keras)" in from_run.stderr
    for result in (exported, from_run):
        predicted = pd.read_csv(io.StringIO(result.stdout))[CLASSES].to_numpy()
        print(f"max |predict - keras| = {np.abs(predicted - from_keras).max():.2e}")
        np.testing.assert_allclose(predicted, from_keras, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_tflite_that_strays_from_the_keras_model_fails_the_export(trained, exported, tmp_path, monkeypatch):
    """A run trained with another seed, its conversion replaced by the first run's model.tflite: the
    export is refused and an earlier export in the destination stays as it was."""
    project = copy_of_project(trained, tmp_path)
    Cli(project)("train", "--seed", "99")
    first_runs_tflite = (exported / "model.tflite").read_bytes()
    monkeypatch.setattr(conversion, "saved_model_to_tflite", lambda *args: first_runs_tflite)
    out = tmp_path / "deploy"
    shutil.copytree(exported, out)
    before = snapshot(out)
    result = Cli(project)("export", "--out", out, "--force", expect=1)
    assert re.fullmatch(
        r"error: model\.tflite on litert: its probabilities on the check batch differ from model\.keras's by up to "
        r"\S+ \(at most 0\.0001 allowed\); nothing was exported \(a conversion bug: tell us\)\n",
        result.stderr,
    ), result.stderr
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["copy", "deploy"]


@pytest.mark.slow
def test_without_an_inference_engine_the_tflite_is_written_unchecked(trained, tmp_path, monkeypatch):
    for package in ("ai_edge_litert", "openvino"):
        monkeypatch.setitem(sys.modules, package, None)  # how Python marks a module as not importable
    result = Cli(trained)("export", "--out", tmp_path / "deploy", "--what", "model")
    note = "model.tflite not checked: no inference engine installed (pip install ai-edge-litert)"
    assert f"warning: {note}\n" in result.stderr
    card = json.loads((tmp_path / "deploy" / "model_card.json").read_text())
    sha256 = hashlib.sha256((tmp_path / "deploy" / "model.tflite").read_bytes()).hexdigest()
    assert card["tflite"] == {"file": "model.tflite", "sha256": sha256, "checked_on": None, "note": note}
    assert note in (tmp_path / "deploy" / "model_card.md").read_text()


@pytest.mark.slow
def test_with_openvino_alone_the_tflite_is_checked_and_run_on_it(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # how Python marks a module as not importable
    Cli(trained)("export", "--out", tmp_path / "deploy", "--what", "model")
    card = json.loads((tmp_path / "deploy" / "model_card.json").read_text())
    assert card["tflite"]["checked_on"] == "openvino" and card["tflite"]["max_abs_difference"] <= 1e-4
    images = sorted((trained.parent / "images").glob("img_*.png"))
    result = Cli(tmp_path)("predict", "--model", "deploy", *images)
    assert "(model.tflite on openvino)" in result.stderr
    model = keras.models.load_model(tmp_path / "deploy" / "model.keras")
    expected = model.predict_on_batch(np.stack([load_image(str(path), IMSHAPE, 3) for path in images]))
    predicted = pd.read_csv(io.StringIO(result.stdout))[CLASSES].to_numpy()
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-4)


def test_a_model_the_converter_refuses_is_exported_without_tflite(trained, tmp_path, monkeypatch):
    def refuse(*args):
        raise PatchworkError(
            "the model cannot be converted to TFLite (ConverterError: op X is neither a custom op nor a flex op)"
        )

    monkeypatch.setattr(conversion, "saved_model_to_tflite", refuse)
    result = Cli(trained)("export", "--out", tmp_path / "deploy", "--what", "model")
    note = (
        "model.tflite not written: the model cannot be converted to TFLite "
        "(ConverterError: op X is neither a custom op nor a flex op)"
    )
    assert f"warning: {note}\n" in result.stderr
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == [
        "model.keras",
        "model_card.json",
        "model_card.md",
        "saved_model",
    ]
    card = json.loads((tmp_path / "deploy" / "model_card.json").read_text())
    assert card["tflite"] == {"file": None, "note": note} and "tflite" not in card["files"]


def test_unknown_run_is_refused_with_the_list_of_runs(trained):
    run_id = (trained / "models" / "LATEST").read_text().strip()
    result = Cli(trained)("export", "--out", "../nowhere", "--run", "nope", expect=1)
    assert result.stderr == f"error: unknown run 'nope'; runs: {run_id}\n"
    assert not (trained.parent / "nowhere").exists()


def test_a_non_empty_directory_needs_force(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    result = Cli(trained)("export", "--out", out, "--what", "labels,predictions", expect=1)
    assert result.stderr == f"error: {out}: directory is not empty; pass --force to write into it\n"
    assert snapshot(out) == before and not list(tmp_path.glob(".out.export-*"))
    written = Cli(trained)("export", "--out", out, "--what", "predictions,labels", "--force").stdout
    assert written.splitlines() == [str(out / "labels.csv"), str(out / "predictions.csv")]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left behind


def test_bad_what_is_a_clear_error(trained, tmp_path):
    result = Cli(trained)("export", "--out", tmp_path / "x", "--what", "labels,weights", expect=1)
    assert "--what: expected a comma-separated list of model, labels, predictions, got 'labels,weights'" in (
        result.stderr
    )


def test_labels_round_trip_through_init(tmp_path):
    project, _ = feature_project(tmp_path, rows=20, labelled=10, validation=4)
    opened = open_project(project)
    paths = opened.labels()["filepath"]
    opened.label(paths[15], a=1, exclude=True)  # in the journal only: export must fold it in
    opened.label(paths[16], b=0, validation=True)
    Cli(project)("export", "--out", "../labels-out", "--what", "labels")
    out = tmp_path / "labels-out"
    Cli(out)("init", "../copy", "--labels", "labels.csv")
    original, copy = opened.labels(), open_project(tmp_path / "copy").labels()
    locate = lambda directory, paths: [os.path.normpath(directory / p) for p in paths]  # noqa: E731
    assert locate(tmp_path / "copy", copy["filepath"]) == locate(project, original["filepath"])
    pd.testing.assert_frame_equal(copy.drop(columns="filepath"), original.drop(columns="filepath"))
    assert copy.loc[15, "a"] == 1 and copy.loc[15, "exclude"] and copy.loc[16, "validation"]


@pytest.mark.slow
def test_labels_and_predictions_export_without_tensorflow(tmp_path):
    project, _ = feature_project(tmp_path, rows=20, labelled=10, validation=4)
    Cli(project)("train")
    report = probe("--project", "proj", "export", "--out", "deploy", "--what", "labels,predictions", cwd=tmp_path)
    assert report["code"] in (0, None) and not report["tensorflow"]
    assert len(pd.read_csv(tmp_path / "deploy" / "predictions.csv")) == 20


@pytest.mark.slow
def test_a_model_from_imported_features_cannot_be_exported(tmp_path):
    project, _ = feature_project(tmp_path, rows=20, labelled=10, validation=4)
    Cli(project)("train")
    result = Cli(project)("export", "--out", "../deploy", expect=1)
    assert "trained on features imported from features.npy" in result.stderr
    assert "export --what labels,predictions only" in result.stderr
    assert not (tmp_path / "deploy").exists()


@pytest.mark.parametrize("application", ["ResNet50", "MobileNetV2", "DenseNet121"])  # caffe, tf, torch modes
def test_keras_application_preprocessing_is_saved_as_standard_layers(application, tmp_path):
    """keras:NAME extractors preprocess in a Lambda, which load_model cannot rebuild without the
    function registered; the exported model computes it with a 1x1 convolution instead."""
    preprocess = importlib.import_module(getattr(keras.applications, application).__module__).preprocess_input
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="backbone")
    model = keras.Model(
        inputs, keras.layers.GlobalAveragePooling2D()(backbone(keras.layers.Lambda(preprocess)(inputs)))
    )
    without_lambdas(model).save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # safe mode, no custom objects
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(pixels), model.predict_on_batch(pixels), rtol=1e-4, atol=1e-4)


def test_a_lambda_that_is_not_per_channel_linear_is_refused():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Lambda(keras.ops.square, name="squares")(inputs))
    with pytest.raises(PatchworkError, match="layer 'squares' is Python code .* not a per-channel linear map"):
        without_lambdas(model)
