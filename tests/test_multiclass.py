"""The task type (issue [10]): multiclass projects, init --task and --classes-from-folders,
exclusive label edits, two 1s refused wherever they come from, classes add/rename."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from builders import MULTICLASS_CLASSES as MC_CLASSES
from builders import Cli, multiclass_project, snapshot, write_images
from PIL import Image

from patchwork_cli import PatchworkError, open_project
from patchwork_cli.cli.init import Task
from patchwork_cli.store.config import TASKS
from patchwork_cli.store.journal import Journal

# Keras' own saving trips a NumPy 2 deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def folders(root: Path, counts: dict[str, int]) -> Path:
    """root/photos/<class>/ with `counts[class]` real PNG files each."""
    for name, count in counts.items():
        write_images(root / "photos" / name, count, prefix=name)
    return root / "photos"


@pytest.fixture
def multiclass_dir(tmp_path, cli, images) -> Path:
    cli("init", "proj", "--images", "images", "--classes", "cat,dog,bird", "--task", "multiclass")
    return tmp_path / "proj"


def config_of(project_dir: Path) -> dict:
    return yaml.safe_load((project_dir / "patchwork.yaml").read_text())


# --- init ---


def test_init_task_multiclass_is_written_and_the_default_stays_multilabel(tmp_path, cli, images, multiclass_dir):
    assert config_of(multiclass_dir)["task"] == "multiclass"
    assert open_project(multiclass_dir).multiclass
    cli("init", "other", "--images", "images", "--classes", "a,b")
    assert config_of(tmp_path / "other")["task"] == "multilabel"
    # a project written before the key existed keeps today's behaviour
    text = (tmp_path / "other" / "patchwork.yaml").read_text().replace("task: multilabel\n", "")
    (tmp_path / "other" / "patchwork.yaml").write_text(text)
    assert not open_project(tmp_path / "other").multiclass
    result = cli("init", "bad", "--images", "images", "--classes", "a", "--task", "softmax", expect=2)
    assert "'softmax' is not one of 'multilabel', 'multiclass'" in result.stderr
    assert [task.value for task in Task] == list(TASKS)  # the command line offers the config's tasks


def test_a_bad_task_in_patchwork_yaml_names_the_key(tmp_path, cli, multiclass_dir):
    path = multiclass_dir / "patchwork.yaml"
    path.write_text(path.read_text().replace("task: multiclass", "task: multi"))
    result = cli("--project", "proj", "status", expect=1)
    assert result.stderr.strip() == (f"error: {path}: task: expected one of 'multilabel', 'multiclass', got 'multi'")


def test_classes_from_folders_labels_every_image_by_its_folder(tmp_path, cli):
    folders(tmp_path, {"dog": 2, "cat": 3, "bird": 1})
    (tmp_path / "photos" / "cat" / "notes.txt").write_text("not an image")
    result = cli("init", "pets", "--images", "photos", "--classes-from-folders")
    assert "6 images, classes bird, cat, dog (multiclass" in result.stderr
    lines = (tmp_path / "pets" / "labels.csv").read_text().splitlines()
    assert lines == [
        "filepath,exclude,validation,subset,bird,cat,dog",
        "../photos/bird/bird_0000.png,False,False,,1,0,0",
        "../photos/cat/cat_0000.png,False,False,,0,1,0",
        "../photos/cat/cat_0001.png,False,False,,0,1,0",
        "../photos/cat/cat_0002.png,False,False,,0,1,0",
        "../photos/dog/dog_0000.png,False,False,,0,0,1",
        "../photos/dog/dog_0001.png,False,False,,0,0,1",
    ]
    config = config_of(tmp_path / "pets")
    assert config["task"] == "multiclass" and config["classes"] == ["bird", "cat", "dog"]
    # --task multiclass with it is merely redundant
    cli("init", "again", "--images", "photos", "--classes-from-folders", "--task", "multiclass")


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (lambda photos: None, [], "photos: no class sub-directories; --classes-from-folders expects"),
        (lambda photos: (photos / "a:b").mkdir(), [], "invalid class name 'a:b'"),
        (lambda photos: (photos / "filepath").mkdir(), [], "invalid class name 'filepath'"),
        (lambda photos: write_images(photos, 1, "loose"), [], "loose_0000.png: an image outside the class"),
        (lambda photos: (photos / "cat").mkdir(), ["--classes", "cat"], "drop --classes"),
        (lambda photos: (photos / "cat").mkdir(), ["--task", "multilabel"], "drop --task multilabel"),
        (lambda photos: (photos / "cat").mkdir(), [], "no images in its class sub-directories (cat)"),
    ],
)
def test_classes_from_folders_refusals_write_nothing(tmp_path, cli, setup, extra, message):
    photos = tmp_path / "photos"
    photos.mkdir()
    setup(photos)
    before = snapshot(tmp_path)
    result = cli("init", "pets", "--images", "photos", "--classes-from-folders", *extra, expect=1)
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before and not (tmp_path / "pets").exists()


def test_init_labels_table_with_two_ones_is_refused(tmp_path, cli, images):
    (tmp_path / "old.csv").write_text(f"filepath,cat,dog\nimages/{images[0].name},1,0\nimages/{images[1].name},1,1\n")
    before = snapshot(tmp_path)
    result = cli("init", "proj", "--labels", "old.csv", "--task", "multiclass", expect=1)
    assert result.stderr.strip() == (
        "error: old.csv, line 3: columns 'cat' and 'dog' are both 1; a multiclass project takes one class per image"
    )
    assert snapshot(tmp_path) == before
    cli("init", "proj", "--labels", "old.csv")  # a multilabel project takes it


# --- exclusive edits ---


def test_a_one_sets_the_other_classes_to_zero_in_one_journal_record(multiclass_dir):
    project = open_project(multiclass_dir)
    path = project.labels()["filepath"][0]
    assert project.label(path, dog=1, seconds=1.5) == {"dog": 1, "cat": 0, "bird": 0}
    project.label(path, cat=1)
    project.edit_labels([(project.labels()["filepath"][1], {"bird": 1, "exclude": True})])
    records = Journal(multiclass_dir / "labels.journal").read()
    assert [r["set"] for r in records] == [
        {"dog": 1, "cat": 0, "bird": 0},
        {"cat": 1, "dog": 0, "bird": 0},
        {"bird": 1, "exclude": True, "cat": 0, "dog": 0},
    ]
    table = project.labels()
    assert table.loc[0, ["cat", "dog", "bird"]].tolist() == [1, 0, 0]
    assert table.loc[1, ["cat", "dog", "bird"]].tolist() == [0, 0, 1]


def test_zeros_alone_are_a_partial_label(multiclass_dir):
    project = open_project(multiclass_dir)
    path = project.labels()["filepath"][0]
    assert project.label(path, dog=0) == {"dog": 0}
    row = project.labels().loc[0, ["cat", "dog", "bird"]]
    assert row.isna().tolist() == [True, False, True] and row["dog"] == 0


def test_conflicting_edits_are_refused_and_nothing_is_written(multiclass_dir):
    project = open_project(multiclass_dir)
    path = project.labels()["filepath"][0]
    before = snapshot(multiclass_dir)
    with pytest.raises(PatchworkError, match="columns 'cat' and 'dog' are both 1"):
        project.label(path, cat=1, dog=1)
    with pytest.raises(PatchworkError, match="'bird' cannot be set to unlabelled in the same edit"):
        project.label(path, cat=1, bird=None)
    with pytest.raises(PatchworkError, match="both 1"):
        project.edit_labels([(project.labels()["filepath"][1], {"cat": 1}), (path, {"dog": 1, "bird": 1})])
    assert snapshot(multiclass_dir) == before


def test_import_with_two_ones_is_refused_naming_file_line_and_columns(tmp_path, cli, multiclass_dir):
    (tmp_path / "answers.csv").write_text("filepath,cat,dog,bird\nimages/img_0000.png,1,,\nimages/img_0001.png,0,1,1\n")
    before = snapshot(multiclass_dir)
    result = cli("--project", "proj", "label", "--import", "answers.csv", expect=1)
    assert result.stderr.strip() == (
        "error: answers.csv, line 3: columns 'dog' and 'bird' are both 1; "
        "a multiclass project takes one class per image"
    )
    assert snapshot(multiclass_dir) == before


def test_import_applies_exclusive_edits(tmp_path, cli, multiclass_dir):
    (tmp_path / "answers.csv").write_text("filepath,cat,dog\nimages/img_0000.png,,1\nimages/img_0001.png,0,\n")
    cli("--project", "proj", "label", "--import", "answers.csv")
    lines = (multiclass_dir / "labels.csv").read_text().splitlines()
    assert lines[1:3] == ["../images/img_0000.png,False,False,,0,1,0", "../images/img_0001.png,False,False,,0,,"]


def test_a_hand_edited_labels_csv_with_two_ones_is_refused(tmp_path, cli, multiclass_dir):
    path = multiclass_dir / "labels.csv"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].removesuffix(",,,") + ",1,,1"
    path.write_text("\n".join(lines) + "\n")
    before = snapshot(multiclass_dir)
    for command in (["status"], ["sample", "-n", "2"], ["classes", "add", "fish"]):
        result = cli("--project", "proj", *command, expect=1)
        assert result.stderr.strip() == (
            f"error: {path}, line 5: columns 'cat' and 'bird' are both 1; "
            "a multiclass project takes one class per image"
        )
    assert snapshot(multiclass_dir) == before


# --- the other commands on a multiclass project ---


def test_status_sample_and_classes_work_on_a_multiclass_project(tmp_path, cli):
    folders(tmp_path, {"cat": 3, "dog": 2})
    cli("init", "pets", "--images", "photos", "--classes-from-folders")
    status = json.loads(cli("--project", "pets", "status", "--json").stdout)
    assert status["classes"]["cat"]["train"] == {"positive": 3, "negative": 2}
    assert status["labelled"]["full"] == 5
    cli("--project", "pets", "classes", "add", "fox")
    cli("--project", "pets", "classes", "rename", "dog", "hound")
    lines = (tmp_path / "pets" / "labels.csv").read_text().splitlines()
    # the new class is unlabelled everywhere; the positives keep their meaning
    assert lines[0] == "filepath,exclude,validation,subset,cat,hound,fox"
    assert lines[1] == "../photos/cat/cat_0000.png,False,False,,1,0,"
    assert lines[5] == "../photos/dog/dog_0001.png,False,False,,0,1,"
    assert config_of(tmp_path / "pets")["task"] == "multiclass"
    project = open_project(tmp_path / "pets")
    assert project.label(lines[1].split(",")[0], fox=1) == {"fox": 1, "cat": 0, "hound": 0}
    sampled = cli("--project", "pets", "sample", "-n", "5", "--from", "all").stdout.split()
    assert len(sampled) == 5


# --- training, evaluation and export of a multiclass project ---


def predictions_of(project: Path, run_id: str) -> np.ndarray:
    return zarr.open_array(str(project / "models" / run_id / "predictions.zarr"), mode="r")[:]


@pytest.fixture(scope="module")
def trained_multiclass(tmp_path_factory) -> tuple[Path, dict]:
    project = multiclass_project(tmp_path_factory.mktemp("multiclass"))
    return project, json.loads(Cli(project)("train", "--seed", "7", "--json").stdout)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_multiclass_run_is_a_softmax_and_records_its_task(trained_multiclass):
    project, report = trained_multiclass
    run_dir = project / "models" / report["run_id"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["task"] == "multiclass" and run["seed"] == 7
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["seed"] == 7
    probabilities = predictions_of(project, report["run_id"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    block = report["metrics"]["validation"]["multiclass"]
    assert block["rows"] == 40 and block["accuracy"] > 0.7
    # 60 training rows, of which every fourth (15) holds only a 0
    assert report["metrics"]["train"]["multiclass"]["rows"] == 45 and report["train_rows"] == 60


@pytest.mark.slow
@pytest.mark.tensorflow
def test_train_seed_makes_a_run_reproducible(trained_multiclass):
    project, report = trained_multiclass
    cli = Cli(project)
    again = json.loads(cli("train", "--seed", "7", "--json").stdout)["run_id"]
    other = json.loads(cli("train", "--seed", "8", "--json").stdout)["run_id"]
    np.testing.assert_array_equal(predictions_of(project, again), predictions_of(project, report["run_id"]))
    assert not np.array_equal(predictions_of(project, other), predictions_of(project, report["run_id"]))
    # --if-changed compares with the seed asked for
    assert json.loads(cli("train", "--if-changed", "--seed", "8", "--json").stdout)["skipped"]
    assert not json.loads(cli("train", "--if-changed", "--seed", "9", "--json").stdout)["skipped"]


@pytest.mark.tensorflow
@pytest.mark.slow
def test_evaluate_reports_the_confusion_matrix(trained_multiclass):
    project, report = trained_multiclass
    cli = Cli(project)
    run_id = report["run_id"]
    metrics = json.loads(cli("evaluate", "--run", run_id, "--json").stdout)
    block = metrics["validation"]["multiclass"]
    confusion = np.array(block["confusion"]["matrix"])
    assert block["confusion"]["classes"] == MC_CLASSES
    assert confusion.sum() == block["rows"] == 40
    assert block["accuracy"] == pytest.approx(np.trace(confusion) / 40)
    for k, name in enumerate(MC_CLASSES):
        assert block["classes"][name]["recall"] == pytest.approx(confusion[k, k] / confusion[k].sum())
        assert block["classes"][name]["precision"] == pytest.approx(confusion[k, k] / confusion[:, k].sum())
    assert metrics["validation"]["macro"]["roc_auc"] > 0.8  # today's metrics stay beside them
    png = project / "reports" / run_id / "confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = cli("evaluate", "--run", run_id)
    assert f"confusion matrix: {png}" in text.stderr
    lines = text.stdout.splitlines()
    assert f"validation as a classifier (top class, 40 rows with one positive): accuracy {block['accuracy']:.3f}" in (
        text.stdout
    )
    start = lines.index("confusion on validation rows (rows: true class, columns: predicted)")
    assert lines[start + 1].split() == MC_CLASSES
    assert [int(n) for n in lines[start + 2].split()[1:]] == confusion[0].tolist()


@pytest.mark.slow
@pytest.mark.tensorflow
def test_exported_multiclass_model_outputs_softmax(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)).save(
        tmp_path / "extractor.keras"
    )
    folders(tmp_path, {"cat": 6, "dog": 6, "fox": 6})
    cli = Cli(tmp_path)
    cli("init", "pets", "--images", "photos", "--classes-from-folders")
    config = yaml.safe_load((tmp_path / "pets" / "patchwork.yaml").read_text())
    config["imshape"] = [16, 16]
    config["extractor"].update(name="../extractor.keras", pooling="avg", batch_size=8)
    config["model"]["head"] = "mlp:8"
    config["training"].update(epochs=2, batches_per_epoch=5, batch_size=8)
    (tmp_path / "pets" / "patchwork.yaml").write_text(yaml.safe_dump(config))
    project = Cli(tmp_path / "pets")
    project("extract")
    project("train")
    project("export", "--out", "../deploy")
    card = json.loads((tmp_path / "deploy" / "model_card.json").read_text())
    assert card["task"] == "multiclass" and "softmax" in card["output"]["meaning"]
    model = keras.models.load_model(tmp_path / "deploy" / "model.keras", compile=False)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "photos").rglob("*.png"))])
    np.testing.assert_allclose(model.predict(pixels, verbose=0).sum(axis=1), 1.0, rtol=1e-5)
    predicted = pd.read_csv(io.StringIO(cli("predict", "--model", "deploy", "photos").stdout))
    assert list(predicted.columns) == ["filepath", "cat", "dog", "fox"] and len(predicted) == 18
    np.testing.assert_allclose(predicted[["cat", "dog", "fox"]].sum(axis=1), 1.0, atol=1e-5)


def test_multiclass_metrics_by_hand():
    from patchwork_cli.evaluation.metrics import compute_metrics
    from patchwork_cli.store.run_metrics import RunMetrics

    nan = np.nan
    labels = np.array(
        [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, nan, 0], [1, 1, 0], [nan, nan, nan], [1, 0, 0]]
    )
    probabilities = np.array(
        [
            [0.8, 0.1, 0.1],  # a -> a
            [0.2, 0.7, 0.1],  # a -> b
            [0.1, 0.8, 0.1],  # b -> b
            [0.1, 0.6, 0.3],  # b -> b
            [0.5, 0.2, 0.3],  # c -> a
            [0.1, 0.8, 0.1],  # only 0s: no true class, not counted
            [0.5, 0.4, 0.1],  # two 1s (a multilabel table): not counted
            [0.3, 0.3, 0.4],  # unlabelled: not counted
            [nan, nan, nan],  # no prediction: not counted
        ]
    )
    validation, exclude = np.ones(9, bool), np.zeros(9, bool)
    metrics = compute_metrics(probabilities, labels, validation, exclude, MC_CLASSES, task="multiclass")
    block = metrics.validation.multiclass
    assert asdict(block.confusion) == {"classes": MC_CLASSES, "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 0]]}
    assert block.rows == 5 and block.accuracy == pytest.approx(3 / 5)
    assert asdict(block.classes["a"]) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "rows": 2})
    assert asdict(block.classes["b"]) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "rows": 2})
    assert asdict(block.classes["c"]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "rows": 1}
    assert block.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert metrics.train.multiclass.rows == 0 and metrics.train.multiclass.accuracy is None
    assert RunMetrics.from_dict(json.loads(json.dumps(metrics.as_dict()))) == metrics  # as metrics.json keeps it
    multilabel = compute_metrics(probabilities, labels, validation, exclude, MC_CLASSES)
    assert multilabel.validation.multiclass is None and "multiclass" not in multilabel.as_dict()["validation"]


def test_the_labelling_session_shows_the_exclusive_edit(multiclass_dir):
    from patchwork_cli.labelling.session import LabelSession

    project = open_project(multiclass_dir)
    session = LabelSession(project, [0, 1], loader=lambda path: np.zeros((4, 4, 3), np.uint8))
    try:
        session.cycle_class(1)  # dog: unlabelled -> 1, and cat and bird -> 0
        assert session.current.values == {"cat": 0, "dog": 1, "bird": 0}
        session.cycle_class(1)  # dog -> 0: "none of these" so far
        assert session.current.values == {"cat": 0, "dog": 0, "bird": 0}
    finally:
        session.finish()
    assert [r["set"] for r in Journal(multiclass_dir / "labels.journal").read()] == []  # folded by finish
    assert project.labels().loc[0, ["cat", "dog", "bird"]].tolist() == [0, 0, 0]
