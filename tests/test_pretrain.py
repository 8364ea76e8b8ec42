"""patchwork pretrain: SimCLR on the project's own images (pretraining/pretrain.py and
pretraining/simclr.py), kept small and fast: 48 of scikit-learn's real digits as grey PNGs,
32 px views, batches of 8, the bundled extractor."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchwork_cli.store.project import open_project

FAST = ("--epochs", "2", "--image-size", "32", "--batch-size", "8")
COUNT = 48


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    """COUNT real handwritten digits (8x8, 0..16) as 24x24 grey PNGs, and their classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    directory = tmp_path_factory.mktemp("digits")
    for i in range(COUNT):
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).resize((24, 24), Image.BILINEAR).save(directory / f"d{i:03d}_{digits.target[i]}.png")
    return directory


@pytest.fixture
def digits_project(tmp_path, cli, digits_dir) -> Path:
    """A multiclass project over the digits; the first half are validation images with their class."""
    cli(
        "init",
        "proj",
        "--images",
        digits_dir,
        "--classes",
        ",".join(f"n{k}" for k in range(10)),
        "--task",
        "multiclass",
    )
    project_dir = tmp_path / "proj"
    project = open_project(project_dir)
    for filepath in project.labels()["filepath"].tolist()[: COUNT // 2]:
        digit = Path(filepath).stem.split("_")[1]
        project.label(filepath, validation=True, **{f"n{digit}": 1})
    return project_dir


def losses(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.tensorflow
def test_pretrain_writes_an_extractor_that_extract_takes(cli, digits_project, digits_dir):
    import keras

    from patchwork_cli.extractors.efficientnet_lite0 import build_efficientnet_lite0

    result = cli("--project", digits_project, "pretrain", *FAST)
    path = Path(result.stdout.strip())
    assert path.name == "extractor.keras" and path.is_file()
    assert path.parent.name.startswith("pretrain-")
    assert "use it: patchwork extract --model" in result.stderr

    model = keras.models.load_model(path, compile=False)
    assert model.input_shape == (None, None, None, 3)  # any size, like the bundled extractor
    pixels = np.asarray(Image.open(next(digits_dir.glob("d000_*.png"))).convert("RGB"))
    batch = np.stack([np.asarray(Image.fromarray(pixels).resize((64, 64)), np.float32)])
    adapted = model.predict(batch, verbose=0)
    start = build_efficientnet_lite0(False, (64, 64, 3)).predict(batch, verbose=0)
    assert adapted.shape == start.shape == (1, 2, 2, 1280)
    assert np.abs(adapted - start).max() > 1e-3  # training moved the weights

    rows = losses(path.parent / "loss.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]  # epoch 0: the starting extractor's kNN accuracy
    assert all(0 <= float(r["knn_accuracy"]) <= 1 for r in rows)
    assert all(np.isfinite(float(r["loss"])) for r in rows[1:])
    assert (path.parent / "loss.png").stat().st_size > 0

    cli("--project", digits_project, "extract", "--model", path, "--overwrite")
    store = open_project(digits_project).open_features()
    assert store.identity["name"] == "extractor.keras"
    assert store.identity["output_shape"] == [7, 7, 1280]  # at the project's 224x224


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_finished_pretrain_is_not_resumed(cli, digits_project):
    first = Path(
        cli(
            "--project", digits_project, "pretrain", "--epochs", "1", "--image-size", "32", "--batch-size", "16"
        ).stdout.strip()
    )
    second = Path(
        cli(
            "--project", digits_project, "pretrain", "--epochs", "1", "--image-size", "32", "--batch-size", "16"
        ).stdout.strip()
    )
    assert first != second and first.is_file() and second.is_file()


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_killed_pretrain_resumes_from_its_checkpoint(cli, digits_project):
    args = ["--epochs", "4", "--image-size", "32", "--batch-size", "8"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "patchwork_cli", "--project", str(digits_project), "pretrain", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    models = Path(digits_project) / "models"
    deadline = time.monotonic() + 300
    try:
        while not list(models.glob("pretrain-*/checkpoint.npz")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    (directory,) = list(models.glob("pretrain-*"))
    assert not (directory / "extractor.keras").exists()
    done = int(losses(directory / "loss.csv")[-1]["epoch"])
    assert 1 <= done < 4

    result = cli("--project", digits_project, "pretrain", *args)
    assert f"resuming {directory.name} after epoch" in result.stderr
    assert Path(result.stdout.strip()) == directory / "extractor.keras"
    epochs = [int(r["epoch"]) for r in losses(directory / "loss.csv")]
    assert epochs == [0, 1, 2, 3, 4]  # continued, not restarted
    assert list(models.glob("pretrain-*")) == [directory]


@pytest.mark.slow
@pytest.mark.tensorflow
def test_no_resume_starts_afresh(cli, digits_project):
    models = Path(digits_project) / "models"
    (models / "pretrain-20000101-000000-abcd").mkdir(parents=True)  # an unfinished one, other settings
    out = Path(
        cli(
            "--project",
            digits_project,
            "pretrain",
            "--no-resume",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "16",
        ).stdout.strip()
    )
    assert out.parent.name != "pretrain-20000101-000000-abcd"


@pytest.mark.slow
@pytest.mark.parametrize(
    "section, message",
    [
        ("pretrain: {temperature: 0}", "pretrain.temperature: must be above 0, got 0.0"),
        ("pretrain: {batch_size: 1}", "pretrain.batch_size: must be at least 2, got 1"),
        ("pretrain: {image_size: 16}", "pretrain.image_size: must be at least 32, got 16"),
        ("pretrain: {epochs: ten}", "pretrain.epochs: expected an integer, got 'ten'"),
        ("pretrain: {learning_rate: -1}", "pretrain.learning_rate: must be above 0, got -1.0"),
        ("pretrain: {temprature: 0.1}", "unknown key 'pretrain.temprature' (did you mean 'pretrain.temperature'?)"),
    ],
)
def test_bad_pretrain_config_is_refused_naming_the_key(cli, project_dir, section, message):
    config = project_dir / "patchwork.yaml"
    config.write_text(config.read_text() + "\n" + section + "\n")
    result = cli("--project", project_dir, "pretrain", expect=1)
    assert message in result.stderr
    assert not (project_dir / "models").exists()


def test_bad_flags_are_refused_naming_the_flag(cli, project_dir):
    result = cli("--project", project_dir, "pretrain", "--temperature", "0", expect=1)
    assert "--temperature" in result.stderr
    assert not (project_dir / "models").exists()


@pytest.mark.tensorflow
def test_augmentations_keep_pixels_in_range_and_grey_grey():
    from patchwork_cli.pretraining.simclr import augment, is_grey, knn_accuracy
    from patchwork_cli.util.tensorflow_runtime import start_tensorflow

    tf = start_tensorflow()
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (4, 40, 40, 3)).astype(np.float32)
    grey = np.repeat(colour[..., :1], 3, axis=-1)
    assert is_grey(grey.astype(np.uint8)) and not is_grey(colour.astype(np.uint8))
    seed = tf.constant([1, 2], tf.int64)
    views = augment(tf, tf.constant(colour), 32, False, seed).numpy()
    assert views.shape == (4, 32, 32, 3) and views.min() >= 0 and views.max() <= 255
    assert np.array_equal(views, augment(tf, tf.constant(colour), 32, False, seed).numpy())  # seeded
    grey_views = augment(tf, tf.constant(grey), 32, True, seed).numpy()
    assert np.allclose(grey_views[..., 0], grey_views[..., 2], atol=1e-3)  # no colour made up

    features = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], float)
    assert knn_accuracy(features, np.array([0, 0, 1, 1]), k=1) == 1.0
