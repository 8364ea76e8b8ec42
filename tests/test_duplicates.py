"""Copies among the images: `patchwork duplicates` on real photographs with inserted exact and
near copies (the bundled EfficientNet-Lite0's features), and what sampling, status and evaluate
make of the groups."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
import skimage.data
from builders import Cli
from PIL import Image

from patchwork_cli.cli.duplicates import DEFAULT_FEATURE_THRESHOLD as CLI_FEATURE_DEFAULT
from patchwork_cli.cli.duplicates import DEFAULT_THRESHOLD as CLI_DEFAULT
from patchwork_cli.evaluation.duplicates import DEFAULT_FEATURE_THRESHOLD, DEFAULT_THRESHOLD
from patchwork_cli.store.duplicate_groups import GROUPS_NAME
from patchwork_cli.store.project import Project

PHOTOS = "chelsea coffee astronaut rocket camera coins moon hubble_deep_field immunohistochemistry retina cell horse"


def rgb(name: str) -> Image.Image:
    pixels = getattr(skimage.data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    pixels = np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels[..., :3]
    return Image.fromarray(pixels).resize((256, 256), Image.BILINEAR)


@pytest.fixture(scope="module")
def copies_project(tmp_path_factory):
    """12 distinct photographs and, of the first four: a byte copy under another name, a JPEG
    re-encoding at quality 70, a resize to 70%, a crop of 4% at each border; extracted."""
    root = tmp_path_factory.mktemp("copies")
    images = root / "images"
    images.mkdir()
    for name in PHOTOS.split():
        rgb(name).save(images / f"{name}.png")
    shutil.copy(images / "chelsea.png", images / "chelsea-copy.png")
    rgb("coffee").save(images / "coffee-q70.jpg", quality=70)
    photo = rgb("astronaut")
    photo.resize((179, 179), Image.BILINEAR).save(images / "astronaut-small.png")
    rgb("rocket").crop((10, 10, 246, 246)).save(images / "rocket-cropped.png")
    cli = Cli(root)
    cli("init", "proj", "--images", "images", "--classes", "a,b")
    cli("--project", "proj", "extract")
    return root


def test_duplicates_finds_the_exact_and_the_near_copies_and_nothing_else(copies_project):
    result = Cli(copies_project)("--project", "proj", "duplicates")
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table.columns) == ["group", "filepath", "kind"]
    found = {frozenset(p.rsplit("/", 1)[-1] for p in members) for _, members in table.groupby("group")["filepath"]}
    assert found == {
        frozenset({"chelsea.png", "chelsea-copy.png"}),
        frozenset({"coffee.png", "coffee-q70.jpg"}),
        frozenset({"astronaut.png", "astronaut-small.png"}),
        frozenset({"rocket.png", "rocket-cropped.png"}),
    }
    kinds = dict(zip(table["filepath"].str.rsplit("/", n=1).str[-1], table["kind"], strict=True))
    assert kinds["chelsea-copy.png"] == "exact" and kinds["coffee-q70.jpg"] == "near"
    written = pd.read_csv(copies_project / "proj" / GROUPS_NAME)
    assert len(written) == 8 and "4 group(s) of copies, 8 image(s)" in result.stderr


def test_a_batch_never_holds_two_copies_and_a_labelled_copy_covers_its_group(copies_project, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(copies_project, root)
    cli = Cli(root)
    cli("--project", "proj", "duplicates")
    first = cli("--project", "proj", "sample", "--strategy", "random", "-n", "50", "--seed", "1")
    shown = {line.rsplit("/", 1)[-1] for line in first.stdout.splitlines()}
    assert len(shown) == 16 - 4  # one image of each of the four groups
    for a, b in (("chelsea.png", "chelsea-copy.png"), ("coffee.png", "coffee-q70.jpg")):
        assert (a in shown) != (b in shown)
    assert "left out 4 copy(ies)" in first.stderr
    project = Project(root / "proj")
    coffee_copy = next(path for path in project.labels()["filepath"] if path.endswith("coffee-q70.jpg"))
    project.label(coffee_copy, a=1)
    second = cli("--project", "proj", "sample", "--strategy", "random", "-n", "50", "--seed", "1")
    shown = {line.rsplit("/", 1)[-1] for line in second.stdout.splitlines()}
    assert "coffee.png" not in shown and "coffee-q70.jpg" not in shown  # its group holds a label


def test_status_counts_the_groups_and_the_ones_split_across_validation(copies_project, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(copies_project, root)
    cli = Cli(root)
    cli("--project", "proj", "duplicates")
    paths = Project(root / "proj").labels()["filepath"].tolist()
    (root / "edits.csv").write_text(
        "filepath,a,b,validation\n"
        + "".join(f"{path},1,0,{path.endswith('chelsea-copy.png')}\n" for path in paths if "chelsea" in path)
    )
    cli("--project", "proj", "label", "--import", "edits.csv")
    out = cli("--project", "proj", "status").stdout
    assert "duplicates  4 group(s) of copies, 8 image(s)" in out
    assert "1 group(s) split across training and validation" in out


def test_no_copies_prints_nothing(tmp_path, copies_project):
    root = tmp_path / "few"
    shutil.copytree(copies_project, root)
    for name in ("chelsea-copy.png", "coffee-q70.jpg", "astronaut-small.png", "rocket-cropped.png"):
        (root / "images" / name).unlink()
    shutil.rmtree(root / "proj")
    cli = Cli(root)
    cli("init", "proj", "--images", "images", "--classes", "a,b")
    cli("--project", "proj", "extract")
    result = cli("--project", "proj", "duplicates")
    assert result.stdout == "" and "no copies found" in result.stderr
    # the empty duplicates.csv it leaves reads as no groups (it once crashed status and sample)
    assert "duplicates  0 group(s) of copies, 0 image(s)" in cli("--project", "proj", "status").stdout
    assert len(cli("--project", "proj", "sample", "--strategy", "random", "-n", "5").stdout.splitlines()) == 5


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "nan"])
def test_a_bad_threshold_is_a_one_line_error_and_writes_nothing(copies_project, tmp_path, value):
    root = tmp_path / "copy"
    shutil.copytree(copies_project, root)
    (root / "proj" / GROUPS_NAME).unlink(missing_ok=True)
    result = Cli(root)("--project", "proj", "duplicates", "--threshold", value, expect=1)
    assert result.stderr.count("\n") == 1 and "--threshold" in result.stderr
    assert not (root / "proj" / GROUPS_NAME).exists()


def test_the_help_states_the_threshold_the_finder_uses():
    assert CLI_DEFAULT == DEFAULT_THRESHOLD


def test_the_help_states_the_feature_threshold_the_finder_uses():
    assert CLI_FEATURE_DEFAULT == DEFAULT_FEATURE_THRESHOLD


def test_similar_handwritten_digits_are_not_copies_but_their_copies_are(tmp_path):
    """Distinct digits of one class reach a feature cosine of 0.99 (as close as copies): the
    thumbnails tell them apart. 120 real digits (scikit-learn's), copies of four of them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = tmp_path / "images"
    images.mkdir()
    for i in range(120):
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(images / f"d{i:03d}.png")
    original = {name: Image.open(images / f"{name}.png") for name in ("d000", "d001", "d002", "d003")}
    shutil.copy(images / "d000.png", images / "d000-copy.png")
    original["d001"].save(images / "d001-q75.jpg", quality=75)
    original["d002"].resize((24, 24), Image.BILINEAR).save(images / "d002-small.png")
    original["d003"].crop((1, 1, 31, 31)).save(images / "d003-cropped.png")
    cli = Cli(tmp_path)
    cli("init", "proj", "--images", "images", "--classes", "a,b")
    cli("--project", "proj", "extract")
    table = pd.read_csv(io.StringIO(cli("--project", "proj", "duplicates").stdout))
    found = {frozenset(p.rsplit("/", 1)[-1] for p in members) for _, members in table.groupby("group")["filepath"]}
    assert found == {
        frozenset({"d000.png", "d000-copy.png"}),
        frozenset({"d001.png", "d001-q75.jpg"}),
        frozenset({"d002.png", "d002-small.png"}),
        frozenset({"d003.png", "d003-cropped.png"}),
    }


def test_imported_vectors_pair_by_features_alone(tmp_path):
    """A store of imported vectors has no thumbnails: copies are the rows each other's nearest
    above the feature threshold (an exact copy always)."""
    rng = np.random.default_rng(3)
    vectors = rng.random((40, 32), dtype=np.float32)
    vectors[10] = vectors[3]  # exact
    vectors[20] = vectors[5] + 0.001  # near
    (tmp_path / "list.txt").write_text("".join(f"img/{i:02d}.png\n" for i in range(40)))
    np.save(tmp_path / "f.npy", vectors)
    cli = Cli(tmp_path)
    cli("init", "proj", "--images", "list.txt", "--classes", "a,b")
    cli("--project", "proj", "extract", "--from-npy", "f.npy")
    table = pd.read_csv(io.StringIO(cli("--project", "proj", "duplicates", "--feature-threshold", "0.999").stdout))
    found = {frozenset(p.rsplit("/", 1)[-1] for p in members) for _, members in table.groupby("group")["filepath"]}
    assert found == {frozenset({"03.png", "10.png"}), frozenset({"05.png", "20.png"})}
    assert dict(zip(table["filepath"].str[-6:], table["kind"], strict=True))["10.png"] == "exact"
    bad = cli("--project", "proj", "duplicates", "--feature-threshold", "2", expect=1)
    assert "--feature-threshold" in bad.stderr and bad.stderr.count("\n") == 1
