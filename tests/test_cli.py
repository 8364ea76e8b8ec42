"""The commands of issue [1], in-process through typer's CliRunner: output, files and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from builders import CLASSES, snapshot, write_images

from patchwork_cli.errors import PatchworkError


def labels_of(project_dir: Path) -> pd.DataFrame:
    from patchwork_cli.store.project import open_project

    return open_project(project_dir).labels()


# --- init ---


def test_init_from_a_list_file(tmp_path, cli, images):
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\n\n" + "\n".join(f"  images/{p.name}  " for p in images[:5]) + "\n")
    result = cli("init", "proj", "--images", "list.txt", "--classes", "cat, dog,bird")
    assert result.stdout == ""  # messages go to stderr
    assert "5 images" in result.stderr
    lines = (tmp_path / "proj" / "labels.csv").read_text().splitlines()
    assert lines[0] == "filepath,exclude,validation,subset,cat,dog,bird"
    assert lines[1] == "../images/img_0000.png,False,False,,,,"
    assert len(lines) == 6
    config = (tmp_path / "proj" / "patchwork.yaml").read_text()
    assert "classes: [cat, dog, bird]" in config and "# The fine-tuning head" in config
    assert (tmp_path / "proj" / "labels.journal").read_bytes() == b""


def test_init_scans_a_directory_recursively_and_sorted(tmp_path, cli):
    write_images(tmp_path / "data" / "b", 2)
    write_images(tmp_path / "data" / "a", 2)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "a" / "UPPER.JPG").write_bytes(b"")
    cli("init", "proj", "--images", "data", "--classes", "x")
    paths = labels_of(tmp_path / "proj")["filepath"].tolist()
    assert paths == [
        "../data/a/UPPER.JPG",
        "../data/a/img_0000.png",
        "../data/a/img_0001.png",
        "../data/b/img_0000.png",
        "../data/b/img_0001.png",
    ]


def test_init_from_stdin_with_absolute_paths_kept_absolute(tmp_path, cli, images):
    text = "\n".join(str(p) for p in images[:3])
    cli("init", "proj", "--images", "-", "--classes", "x", input=text)
    assert labels_of(tmp_path / "proj")["filepath"].tolist() == [str(p) for p in images[:3]]


def test_init_warns_about_duplicates_and_missing_files_but_succeeds(tmp_path, cli, images):
    listing = tmp_path / "list.txt"
    listing.write_text("images/img_0000.png\nimages/img_0000.png\n./images/img_0001.png\nimages/gone.png\n")
    result = cli("init", "proj", "--images", "list.txt", "--classes", "x")
    assert "1 duplicate path(s) dropped" in result.stderr
    assert "1 path(s) do not exist (yet), first: ../images/gone.png" in result.stderr
    assert len(labels_of(tmp_path / "proj")) == 3


def test_init_from_an_existing_label_table(tmp_path, cli, images):
    table = tmp_path / "old.csv"
    table.write_text(
        "filepath,exclude,validation,subset,cat,dog\n"
        f"images/{images[0].name},False,True,siteA,1.0,\n"
        f"images/{images[1].name},True,False,,0,1\n"
    )
    cli("init", "proj", "--labels", "old.csv", "--images", "images")
    df = labels_of(tmp_path / "proj")
    assert list(df.columns[4:]) == ["cat", "dog"]
    assert len(df) == len(images)  # the table's rows first, then the new images
    assert df.loc[0, "cat"] == 1 and bool(df.loc[0, "validation"]) and df.loc[0, "subset"] == "siteA"
    assert bool(df.loc[1, "exclude"]) and df.loc[1, "dog"] == 1
    assert df.iloc[2:][["cat", "dog"]].isna().all().all()


def test_init_labels_with_more_classes_given(tmp_path, cli, images):
    (tmp_path / "old.csv").write_text(f"filepath,cat\nimages/{images[0].name},1\n")
    cli("init", "proj", "--labels", "old.csv", "--classes", "cat,dog")
    df = labels_of(tmp_path / "proj")
    assert df.loc[0, "cat"] == 1 and np.isnan(df.loc[0, "dog"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--images", "images", "--classes", "cat,cat"], "class 'cat' is given twice"),
        (["--images", "images", "--classes", "a:b"], "invalid class name 'a:b'"),
        (["--images", "images", "--classes", "exclude"], "reserved"),
        (["--images", "images"], "no classes: give --classes"),
        (["--images", "nowhere.txt", "--classes", "x"], "nowhere.txt: no such file or directory"),
        (["--classes", "x"], "nothing to start from"),
        (["--labels", "bad.csv"], "bad.csv, line 2, column 'cat': expected empty, 0 or 1, got 'maybe'"),
    ],
)
def test_init_errors_exit_1_and_create_nothing(tmp_path, cli, images, args, message):
    (tmp_path / "bad.csv").write_text("filepath,cat\na.png,maybe\n")
    result = cli("init", "proj", *args, expect=1)
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "proj").exists()


def test_init_refuses_an_existing_project_and_force_keeps_the_old_files(tmp_path, cli, project_dir):
    cli("--project", "proj", "label", "--import", write_import(tmp_path, "cat\n", ["images/img_0000.png,1"]))
    before = snapshot(project_dir)
    result = cli("init", "proj", "--images", "images", "--classes", "x", expect=1)
    assert "already a patchwork project; use --force" in result.stderr
    assert snapshot(project_dir) == before
    cli("init", "proj", "--images", "images", "--classes", "x", "--force")
    (kept,) = (project_dir / ".replaced").iterdir()
    assert (kept / "labels.csv").read_bytes() == before["labels.csv"]
    assert labels_of(project_dir).columns[-1] == "x"


def test_a_non_utf8_image_list_is_refused(tmp_path, cli):
    (tmp_path / "list.txt").write_bytes(b"caf\xe9.png\n")
    assert (
        "not a text list of image paths" in cli("init", "p", "--images", "list.txt", "--classes", "x", expect=1).stderr
    )


# --- add ---


def test_add_appends_new_images_and_skips_known_ones(tmp_path, cli, project_dir):
    new = write_images(tmp_path / "more", 3, prefix="new")
    listing = tmp_path / "new.txt"  # paths relative to the current directory, like any argument
    listing.write_text("\n".join([f"more/{p.name}" for p in new] + ["images/img_0000.png"]))
    result = cli("add", "new.txt", "--subset", "day2", "--project", "proj")
    assert "added 3 image(s); 1 already in the project" in result.stderr
    df = labels_of(project_dir)
    assert len(df) == 15 and df["filepath"].iloc[-1] == "../more/new_0002.png"
    assert df["subset"].tolist() == [""] * 12 + ["day2"] * 3
    again = cli("add", str(tmp_path / "more"), "--project", "proj")
    assert "added 0 image(s); 3 already in the project" in again.stderr


def test_add_keeps_pending_journal_edits(tmp_path, cli, project_dir):
    from patchwork_cli.store.project import open_project

    open_project(project_dir).label("../images/img_0003.png", dog=1)
    write_images(tmp_path / "more", 1, prefix="late")
    cli("--project", "proj", "add", "more")
    df = labels_of(project_dir)
    assert df.loc[3, "dog"] == 1 and len(df) == 13
    assert (project_dir / "labels.journal").read_bytes() == b""


def test_add_from_a_subdirectory_of_the_project_finds_it(tmp_path, cli, project_dir):
    sub = project_dir / "incoming"
    write_images(sub, 2, prefix="sub")
    cli.cwd = sub
    cli("add", ".")
    assert labels_of(project_dir)["filepath"].tolist()[-2:] == ["incoming/sub_0000.png", "incoming/sub_0001.png"]


# --- label --import ---


def write_import(tmp_path: Path, header: str, rows: list[str], name: str = "edits.csv") -> str:
    path = tmp_path / name
    path.write_text("filepath," + header + "\n".join(rows) + "\n")
    return name


def test_label_import_applies_edits_and_empty_cells_leave_values(tmp_path, cli, project_dir):
    first = write_import(
        tmp_path,
        "cat,dog,exclude,validation,subset\n",
        [
            "images/img_0000.png,1,0,,true,siteA",
            "images/img_0001.png,0,,True,,",
        ],
    )
    cli("--project", "proj", "label", "--import", first)
    second = write_import(tmp_path, "dog,cat\n", ["images/img_0000.png,,", "../images/img_0001.png,1,"], "b.csv")
    result = cli("--project", "proj", "label", "--import", second)
    assert "imported 1 label edit(s)" in result.stderr
    df = labels_of(project_dir)
    assert (df.loc[0, "cat"], df.loc[0, "dog"]) == (1, 0)
    assert bool(df.loc[0, "validation"]) and df.loc[0, "subset"] == "siteA"
    assert df.loc[1, "cat"] == 0 and df.loc[1, "dog"] == 1 and bool(df.loc[1, "exclude"])
    # import compacts: the edits are in labels.csv itself
    assert (project_dir / "labels.journal").read_bytes() == b""
    assert "../images/img_0000.png,False,True,siteA,1,0," in (project_dir / "labels.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "header, rows, message",
    [
        ("cta\n", ["images/img_0000.png,1"], "line 1: unknown column 'cta' (did you mean 'cat'?)"),
        ("cat\n", ["images/img_0000.png,1", "images/nope.png,1"], "line 3: 'images/nope.png' is not an image"),
        ("cat\n", ["images/img_0000.png,1", "images/img_0001.png,2"], "line 3, column 'cat': expected empty, 0 or 1"),
        ("exclude\n", ["images/img_0000.png,perhaps"], "line 2, column 'exclude': expected empty, True or False"),
        ("cat\n", [",1"], "line 2: empty filepath"),
        ("cat\n", ["images/img_0000.png,1,1"], "malformed CSV"),
    ],
)
def test_label_import_errors_change_nothing(tmp_path, cli, project_dir, header, rows, message):
    before = snapshot(project_dir)
    result = cli("--project", "proj", "label", "--import", write_import(tmp_path, header, rows), expect=1)
    assert message in result.stderr
    assert snapshot(project_dir) == before


@pytest.mark.slow
def test_label_import_of_1000_rows(tmp_path, cli):
    write_images(tmp_path / "many", 1000)
    cli("init", "proj", "--images", "many", "--classes", ",".join(CLASSES))
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3, (1000, 3))  # 2 = leave unlabelled
    rows = [f"many/img_{i:04d}.png," + ",".join("" if v == 2 else str(v) for v in values[i]) for i in range(1000)]
    cli("--project", "proj", "label", "--import", write_import(tmp_path, ",".join(CLASSES) + "\n", rows))
    df = labels_of(tmp_path / "proj")
    expected = np.where(values == 2, np.nan, values)
    np.testing.assert_array_equal(df[CLASSES].to_numpy(), expected)
    status = json.loads(cli("--project", "proj", "status", "--json").stdout)
    assert status["classes"]["dog"]["train"]["positive"] == int((values[:, 1] == 1).sum())
    assert status["labelled"]["full"] == int((values != 2).all(axis=1).sum())


# --- status ---


def test_status_counts(tmp_path, cli, project_dir):
    edits = write_import(
        tmp_path,
        "cat,dog,bird,exclude,validation\n",
        [
            "images/img_0000.png,1,0,0,,",
            "images/img_0001.png,0,1,,,",
            "images/img_0002.png,1,1,1,,true",
            "images/img_0003.png,1,,,true,",
        ],
    )
    cli("--project", "proj", "label", "--import", edits)
    report = json.loads(cli("status", "--json", "--project", "proj").stdout)
    assert report["images"] == 12 and report["excluded"] == 1 and report["validation"] == 1
    assert report["labelled"] == {"full": 2, "partial": 1, "none": 8}
    assert report["classes"]["cat"] == {
        "train": {"positive": 1, "negative": 1},
        "validation": {"positive": 1, "negative": 0},
    }
    assert report["classes"]["bird"]["train"] == {"positive": 0, "negative": 1}
    text = cli("status", "--project", "proj").stdout
    assert "images      12  (excluded 1, validation 1)" in text
    assert "labelled    2 fully, 1 partially, 8 not at all" in text
    assert text.splitlines()[-3].split() == ["cat", "1", "1", "1", "0"]


# --- classes ---


def test_classes_add_and_rename_keep_every_label(tmp_path, cli, project_dir):
    cli("--project", "proj", "label", "--import", write_import(tmp_path, "cat,dog\n", ["images/img_0000.png,1,0"]))
    from patchwork_cli.store.project import open_project

    open_project(project_dir).label("../images/img_0001.png", cat=0)  # pending in the journal
    cli("--project", "proj", "classes", "rename", "cat", "kitten")
    cli("--project", "proj", "classes", "add", "fish")
    assert cli("--project", "proj", "classes", "list").stdout == "kitten\ndog\nbird\nfish\n"
    df = labels_of(project_dir)
    assert df.loc[0, "kitten"] == 1 and df.loc[0, "dog"] == 0 and df.loc[1, "kitten"] == 0
    assert df["fish"].isna().all()
    config = (project_dir / "patchwork.yaml").read_text()
    assert "classes: [kitten, dog, bird, fish]" in config and "# The fine-tuning head" in config


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["rename", "cta", "x"], "unknown class 'cta' (did you mean 'cat'?)"),
        (["rename", "cat", "dog"], "class 'dog' already exists"),
        (["rename", "cat", "a,b"], "invalid class name 'a,b'"),
        (["add", "dog"], "class 'dog' already exists"),
        (["add", "subset"], "reserved"),
    ],
)
def test_classes_errors_change_nothing(cli, project_dir, args, message):
    before = snapshot(project_dir)
    assert message in cli("--project", "proj", "classes", *args, expect=1).stderr
    assert snapshot(project_dir) == before


# --- conventions ---


def test_outside_a_project_is_a_clear_error(cli):
    result = cli("status", expect=1)
    assert result.stderr.startswith("error: not inside a patchwork project")
    assert "Traceback" not in result.stderr


def test_discovery_from_a_subdirectory(cli, project_dir):
    (project_dir / "deep" / "er").mkdir(parents=True)
    cli.cwd = project_dir / "deep" / "er"
    assert json.loads(cli("status", "--json").stdout)["images"] == 12


def test_a_broken_config_is_reported_by_every_command(cli, project_dir):
    config = project_dir / "patchwork.yaml"
    config.write_text(config.read_text().replace("epochs: 20", "epochs: lots"))
    result = cli("--project", "proj", "status", expect=1)
    assert "patchwork.yaml: training.epochs: expected an integer, got 'lots'" in result.stderr


def test_debug_shows_the_exception(cli):
    result = cli("--debug", "status", expect=1)
    assert isinstance(result.exception, PatchworkError)


def test_usage_errors_exit_2(cli):
    assert cli("frobnicate", expect=2).exit_code == 2
    assert cli("init", expect=2).exit_code == 2


def test_help_lists_the_commands(cli):
    out = cli("--help").stdout
    for command in ("init", "add", "status", "label", "classes"):
        assert command in out


def test_a_journal_line_for_a_class_that_is_gone_is_warned_about(cli, project_dir):
    with open(project_dir / "labels.journal", "a") as handle:
        handle.write(json.dumps({"time": "t", "filepath": "../images/img_0000.png", "set": {"cow": 1}}) + "\n")
    result = cli("--project", "proj", "status")
    assert "warning: labels.journal: ../images/img_0000.png: unknown label field 'cow'" in result.stderr


def test_config_yaml_stays_valid_after_class_changes(cli, project_dir):
    cli("--project", "proj", "classes", "add", "two words")
    assert yaml.safe_load((project_dir / "patchwork.yaml").read_text())["classes"][-1] == "two words"
