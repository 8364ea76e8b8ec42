"""Images whose content changed under the same path: found by status, extracted again by extract,
their labels kept and listed for review until the person edits them (issue [17])."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from builders import Cli, image_project, store, tiny_keras_model
from PIL import Image

from patchwork_cli.evaluation import status as status_module
from patchwork_cli.store.changed_images import CHANGED_NAME, read_review_list
from patchwork_cli.store.project import Project
from patchwork_cli.util.images import load_image


@pytest.fixture
def extracted(tmp_path):
    """Six images extracted with a small real Keras model; img_0001 labelled a=1, b=0."""
    project = image_project(tmp_path, 6, tiny_keras_model(tmp_path / "m.keras"))
    cli = Cli(tmp_path)
    cli("--project", "proj", "extract")
    Project(project).label("../images/img_0001.png", a=1, b=0)
    return tmp_path, project, cli


def rewrite(path, seed: int) -> None:
    """New content under the same name (a new mtime and size or digest)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def status_json(cli) -> dict:
    return json.loads(cli("--project", "proj", "status", "--json").stdout)


def row_of(project, name: str) -> int:
    paths = store(project)["filepath"][:].tolist()
    return paths.index(f"../images/{name}")


def test_a_changed_image_is_reported_extracted_again_and_its_labels_kept_for_review(extracted):
    root, project, cli = extracted
    before = store(project)["features"][:]
    rewrite(root / "images" / "img_0001.png", 100)  # labelled
    rewrite(root / "images" / "img_0002.png", 101)  # not labelled
    os.utime(root / "images" / "img_0003.png", ns=(1, 1))  # touched: the same content
    assert status_json(cli)["changed_images"] == {"checked": True, "changed": 2, "missing": 0, "to_review": 0}
    assert "2 image(s) changed since extraction" in cli("--project", "proj", "status").stdout

    result = cli("--project", "proj", "extract")
    assert "2 image(s) had changed since extraction and were extracted again; 1 labelled" in result.stderr
    after = store(project)
    changed = [row_of(project, f"img_000{i}.png") for i in (1, 2)]
    kept = [row for row in range(6) if row not in changed]
    np.testing.assert_array_equal(after["features"][kept], before[kept])
    assert not np.array_equal(after["features"][changed[0]], before[changed[0]])
    # the new features are the model's on the new content: a fresh extraction of the same files agrees
    fresh = image_project(root, 6, root / "m.keras", name="fresh")
    cli("--project", "fresh", "extract")
    np.testing.assert_array_equal(after["features"][changed], store(fresh)["features"][changed])
    # the touched file's new mtime is recorded, so it is not read again
    assert after["file_signature"][row_of(project, "img_0003.png")][1] == 1

    assert read_review_list(project) == ["../images/img_0001.png"]
    labels = Project(project).labels().set_index("filepath")
    assert labels.loc["../images/img_0001.png", "a"] == 1  # kept
    report = status_json(cli)["changed_images"]
    assert report == {"checked": True, "changed": 0, "missing": 0, "to_review": 1}
    assert f"review them with 'patchwork label --paths {CHANGED_NAME}'" in cli("--project", "proj", "status").stdout
    assert "extracted 0 image(s)" in cli("--project", "proj", "extract").stderr  # nothing changed since


def test_a_label_edit_reviews_the_image_and_compaction_keeps_what_is_unreviewed(extracted):
    root, project, cli = extracted
    Project(project).label("../images/img_0004.png", a=0)
    for seed, name in enumerate(("img_0001.png", "img_0004.png")):
        rewrite(root / "images" / name, 200 + seed)
    cli("--project", "proj", "extract")
    assert read_review_list(project) == ["../images/img_0001.png", "../images/img_0004.png"]
    # the list is a path list for the window: label --paths takes it as it is
    opened = Project(project)
    rows = opened.rows_of([(1, p) for p in read_review_list(project)], CHANGED_NAME)
    assert [opened.labels()["filepath"][r] for r in rows] == read_review_list(project)

    opened.label("../images/img_0004.png", a=1)
    assert status_json(cli)["changed_images"]["to_review"] == 1
    opened.compact()  # folds the journal, and with it the edits' times
    assert read_review_list(project) == ["../images/img_0001.png"]
    assert status_json(cli)["changed_images"]["to_review"] == 1
    opened.label("../images/img_0001.png", a=1)
    assert status_json(cli)["changed_images"] is None
    opened.compact()
    assert not (project / CHANGED_NAME).exists()


def test_a_deleted_image_is_counted_as_gone(extracted):
    root, project, cli = extracted
    (root / "images" / "img_0005.png").unlink()
    assert status_json(cli)["changed_images"] == {"checked": True, "changed": 0, "missing": 1, "to_review": 0}


def test_status_leaves_the_check_to_extract_above_its_limit(extracted, monkeypatch):
    root, project, cli = extracted
    monkeypatch.setattr(status_module, "CHANGE_CHECK_LIMIT", 5)
    rewrite(root / "images" / "img_0002.png", 300)
    report = status_json(cli)["changed_images"]
    assert report["checked"] is False and report["changed"] is None
    assert "not checked (over 5 images)" in cli("--project", "proj", "status").stdout
    assert "1 image(s) had changed" in cli("--project", "proj", "extract").stderr


def test_the_signature_and_thumbnail_are_the_files(extracted):
    root, project, _ = extracted
    group = store(project)
    row = row_of(project, "img_0002.png")
    path = root / "images" / "img_0002.png"
    size, mtime, _ = group["file_signature"][row].tolist()
    assert (size, mtime) == (path.stat().st_size, path.stat().st_mtime_ns)
    grey = Image.fromarray(load_image(str(path), (32, 32))).convert("L")
    np.testing.assert_array_equal(group["thumbnail"][row], np.asarray(grey.resize((32, 32), Image.BILINEAR)))
