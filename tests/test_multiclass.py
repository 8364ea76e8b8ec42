"""The task type (issue [10]): multiclass projects, init --task and --classes-from-folders,
exclusive label edits, two 1s refused wherever they come from, classes add/rename."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import snapshot, write_images

from patchwork_cli import PatchworkError, open_project
from patchwork_cli.labels import Journal


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


def test_a_bad_task_in_patchwork_yaml_names_the_key(tmp_path, cli, multiclass_dir):
    path = multiclass_dir / "patchwork.yaml"
    path.write_text(path.read_text().replace("task: multiclass", "task: multi"))
    result = cli("--project", "proj", "status", expect=1)
    assert result.stderr.strip() == (
        f"error: {path}: task: expected one of 'multilabel', 'multiclass', got 'multi'"
    )


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
    (tmp_path / "old.csv").write_text(
        "filepath,cat,dog\n"
        f"images/{images[0].name},1,0\n"
        f"images/{images[1].name},1,1\n"
    )
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
    (tmp_path / "answers.csv").write_text(
        "filepath,cat,dog,bird\nimages/img_0000.png,1,,\nimages/img_0001.png,0,1,1\n"
    )
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
