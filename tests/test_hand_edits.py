"""labels.csv edited by hand never misaligns the features or a run's predictions.

A real project (scikit-learn's digit images as PNG files, a Keras extractor, features, a run)
gets its labels.csv sorted, cut, pasted into and renamed in pandas, as a person would. After
each edit, the property: `sample` never returns a labelled row nor scores an image by another
image's prediction, `extract` extracts exactly the images that lack features, and `train` with
the same seed predicts for every image what the untouched project's run does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from builders import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_digits

from patchwork_cli.sampling.scores import max_entropy
from patchwork_cli.store import runs
from patchwork_cli.store.project import open_project

pytestmark = pytest.mark.tensorflow

IMAGES = 90
LABELLED = 50  # the first 50 rows; the last 15 of them are validation rows
VALIDATION = 15
CLASSES = ["low", "even"]  # digit < 5, digit even


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A project with features for every image and one run, and the run's predictions by filepath."""
    root = tmp_path_factory.mktemp("hand_edits")
    digits = load_digits()
    (root / "images").mkdir()
    for i in range(IMAGES + 10):  # the last 10 files are not in the project yet: rows pasted in later
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.NEAREST).convert("RGB").save(root / "images" / f"d{i:03d}.png")
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    keras.Model(inputs, keras.layers.Conv2D(24, 3, strides=2, activation="relu")(x)).save(root / "tiny.keras")

    (root / "list.txt").write_text("\n".join(f"images/d{i:03d}.png" for i in range(IMAGES)) + "\n")
    cli = Cli(root)
    cli("init", "proj", "--images", "list.txt", "--classes", ",".join(CLASSES))
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["imshape"] = [32, 32]
    config["extractor"].update({"name": str(root / "tiny.keras"), "pooling": "avg", "batch_size": 8})
    config["model"]["head"] = "mlp:8"
    config["training"].update({"epochs": 3, "batches_per_epoch": 10, "batch_size": 16, "seed": 5})
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    Cli(project)("extract")
    target = digits.target[:LABELLED]
    pd.DataFrame(
        {
            "filepath": [f"../images/d{i:03d}.png" for i in range(LABELLED)],
            "low": (target < 5).astype(int),
            "even": (target % 2 == 0).astype(int),
            "validation": [i >= LABELLED - VALIDATION for i in range(LABELLED)],
        }
    ).to_csv(root / "edits.csv", index=False)
    Cli(project)("label", "--import", "../edits.csv")
    Cli(project)("train")
    return project


def predictions_by_filepath(project: Path, run_id: str | None = None) -> dict[str, np.ndarray]:
    """Each image's prediction in a run, read from the run's own record of its rows."""
    run_dir = runs.resolve_run(project, run_id)
    filepaths = zarr.open_array(str(run_dir / runs.FILEPATHS_NAME), mode="r")[:].tolist()
    values = zarr.open_array(str(run_dir / runs.PREDICTIONS_NAME), mode="r")[:]
    return {path: values[row] for row, path in enumerate(filepaths) if not np.isnan(values[row]).any()}


def edited_copy(base: Path, tmp_path: Path, edit) -> tuple[Path, dict]:
    """A copy of the base project whose labels.csv went through pandas: edit(table) -> table."""
    project = tmp_path / "proj"
    shutil.copytree(base, project)
    shutil.copytree(base.parent / "images", tmp_path / "images")
    table = pd.read_csv(project / "labels.csv", keep_default_na=False, dtype=str)
    table, facts = edit(table)
    table.to_csv(project / "labels.csv", index=False)
    return project, facts


def hand_edit(order, deleted, inserted, renamed):
    """An edit as a person makes it: delete some unlabelled rows, rename some rows' images (to a
    copy of the same picture under a new name), paste new images in, then reorder."""

    def apply(table: pd.DataFrame):
        unlabelled = list(range(LABELLED, len(table)))
        drop = {unlabelled[i % len(unlabelled)] for i in deleted}
        renames = {}
        for i in renamed:
            row = i % len(table)
            if row not in drop and row not in renames:
                renames[row] = table.at[row, "filepath"].replace(".png", "-copy.png")
        for row, path in renames.items():
            table.at[row, "filepath"] = path
        table = table.drop(index=sorted(drop)).reset_index(drop=True)
        for k, position in enumerate(inserted):
            row = pd.DataFrame([{**dict.fromkeys(table.columns, ""), "filepath": f"../images/d{IMAGES + k:03d}.png"}])
            row[["exclude", "validation"]] = "False"
            at = position % (len(table) + 1)
            table = pd.concat([table.iloc[:at], row, table.iloc[at:]], ignore_index=True)
        permutation = np.random.default_rng(order).permutation(len(table)) if order else np.arange(len(table))
        return table.iloc[permutation].reset_index(drop=True), {
            "renamed": renames,
            "deleted": len(drop),
            "inserted": len(inserted),
        }

    return apply


edits = st.builds(
    hand_edit,
    order=st.integers(0, 2**16),
    deleted=st.lists(st.integers(0, 100), max_size=4),
    inserted=st.lists(st.integers(0, 200), max_size=3),
    renamed=st.lists(st.integers(0, 200), max_size=3),
)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=edits)
def test_a_hand_edited_table_keeps_every_image_with_its_own_features_and_predictions(base, tmp_path_factory, edit):
    tmp_path = tmp_path_factory.mktemp("edited")
    before = predictions_by_filepath(base)
    project, facts = edited_copy(base, tmp_path, edit)
    expected = dict(before)
    for path in facts["renamed"].values():  # the renamed image is the same picture under a new name
        original = path.replace("-copy.png", ".png")
        shutil.copy(project / original, project / path)
        expected[path] = expected.pop(original)
    cli = Cli(project)
    table = open_project(project).labels()

    # sample, before any new run: by each image's own prediction, never a labelled row
    picked = json.loads(cli("sample", "--strategy", "maxent", "-n", "20", "--format", "json").stdout)
    labelled = set(table["filepath"][table[CLASSES].notna().any(axis=1)])
    for pick in picked:
        stored = table.at[pick["row"], "filepath"]
        assert stored not in labelled
        assert stored in before  # renamed and pasted rows have no prediction yet: left out
        assert pick["score"] == pytest.approx(float(max_entropy(before[stored][None])[0]), abs=1e-6)

    # extract: exactly the images without features (the pasted ones and the renamed ones)
    report = json.loads(cli("extract", "--json").stdout)
    assert report["processed"] == facts["inserted"] + len(facts["renamed"])
    assert report["unused"] == facts["deleted"] + len(facts["renamed"])
    assert report["done"] == len(table) and report["pending"] == 0

    # train with the same seed: every image keeps the prediction the untouched project gave it
    cli("train")
    after = predictions_by_filepath(project)
    for path in table["filepath"]:
        if path in expected:
            np.testing.assert_allclose(after[path], expected[path], rtol=0, atol=1e-6, err_msg=path)


@pytest.mark.slow
def test_sorting_by_filepath_is_reported_and_followed(base, tmp_path):
    project, _ = edited_copy(base, tmp_path, lambda t: (t.sort_values("filepath", ascending=False), {}))
    cli = Cli(project)
    status = cli("status").stdout
    assert "labels.csv's rows are not in the store's order (edited by hand, from line 2)" in status
    assert "labels.csv's rows are not in this run's order (from line 2): each image's prediction is found" in status
    summary = json.loads(cli("status", "--json").stdout)
    assert summary["features"]["in_order"] is False and summary["features"]["first_moved_line"] == 2
    assert summary["features"]["done"] == IMAGES and summary["features"]["pending"] == 0

    # --if-changed notices the edit (and the new run predicts what the old one did)
    assert "nothing to do" not in cli("train", "--if-changed").stderr
    assert "nothing to do" in cli("train", "--if-changed").stderr
    assert json.loads(cli("status", "--json").stdout)["model"]["unpredicted"] == 0


@pytest.mark.slow
def test_deleting_rows_is_reported_and_their_features_stay_unused(base, tmp_path):
    project, _ = edited_copy(base, tmp_path, lambda t: (t.drop(index=[60, 61, 62]).reset_index(drop=True), {}))
    cli = Cli(project)
    summary = json.loads(cli("status", "--json").stdout)
    assert summary["images"] == IMAGES - 3
    assert summary["features"] == {
        "extractor": "tiny.keras",
        "done": IMAGES - 3,
        "failed": 0,
        "pending": 0,
        "unused": 3,
        "recorded": True,
        "in_order": False,
        "first_moved_line": 62,
    }
    assert "3 row(s) of the store belong to images no longer in labels.csv" in cli("status").stdout
    assert "extracted 0 image(s)" in cli("extract").stderr


@pytest.mark.slow
def test_deleting_labelled_rows_trains_as_excluding_them(base, tmp_path):
    """A labelled row deleted by hand is out of training, exactly as if marked exclude."""
    deleted, _ = edited_copy(base, tmp_path / "a", lambda t: (t.drop(index=[3, 7]).reset_index(drop=True), {}))
    excluded, _ = edited_copy(
        base,
        tmp_path / "b",
        lambda t: (t.assign(exclude=["True" if i in (3, 7) else v for i, v in enumerate(t["exclude"])]), {}),
    )
    Cli(deleted)("train")
    Cli(excluded)("train")
    a, b = predictions_by_filepath(deleted), predictions_by_filepath(excluded)
    assert len(a) == IMAGES and set(a) == set(b)  # the deleted images' features are still predicted
    for path in a:
        np.testing.assert_allclose(a[path], b[path], rtol=0, atol=1e-6)


def test_a_store_from_before_row_records_with_rows_deleted_is_refused(base, tmp_path):
    project, _ = edited_copy(base, tmp_path, lambda t: (t.iloc[:-2], {}))
    group = zarr.open_group(str(project / "features.zarr"), mode="r+")
    del group.attrs["rows"]  # as a store written before patchwork recorded its rows' images
    del group["filepath"]
    before = sorted(p.name for p in (project / "features.zarr").rglob("*"))
    result = Cli(project)("extract", expect=1)
    assert "has 88 rows but features.zarr has 90" in result.stderr and "--overwrite" in result.stderr
    assert sorted(p.name for p in (project / "features.zarr").rglob("*")) == before


def test_journal_edits_of_a_renamed_row_are_kept_not_dropped(base, tmp_path):
    project, _ = edited_copy(base, tmp_path, lambda t: (t, {}))
    opened = open_project(project)
    opened.label("../images/d070.png", low=1)
    table = pd.read_csv(project / "labels.csv", keep_default_na=False, dtype=str)
    table.loc[table["filepath"] == "../images/d070.png", "filepath"] = "../images/moved.png"
    table.to_csv(project / "labels.csv", index=False)
    opened.compact()  # the edit names a filepath labels.csv no longer has: it stays in the journal
    assert "d070.png" in (project / "labels.journal").read_text()
    table.loc[table["filepath"] == "../images/moved.png", "filepath"] = "../images/d070.png"
    table.to_csv(project / "labels.csv", index=False)
    labels = opened.labels()
    assert labels.loc[labels["filepath"] == "../images/d070.png", "low"].item() == 1


@pytest.mark.slow
def test_evaluate_and_the_labelling_window_use_each_images_own_prediction(base, tmp_path):
    project, _ = edited_copy(base, tmp_path, lambda t: (t.sample(frac=1, random_state=4).reset_index(drop=True), {}))
    untouched = json.loads(Cli(base)("evaluate", "--json").stdout)
    shuffled = json.loads(Cli(project)("evaluate", "--json").stdout)
    assert shuffled == untouched and shuffled["validation"]["macro"]["roc_auc"] is not None

    from patchwork_cli.labelling.session import latest_probabilities

    opened = open_project(project)
    table = opened.labels()
    before = predictions_by_filepath(base)
    shown = latest_probabilities(opened, range(len(table)), table["filepath"].tolist())
    for row, path in enumerate(table["filepath"]):
        np.testing.assert_array_equal(shown[row], before[path])
