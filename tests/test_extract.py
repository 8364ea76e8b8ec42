"""patchwork extract: the pipeline end to end with a small real Keras model, its failure
handling, resumability, shards, incremental runs and --from-npy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from builders import IMSHAPE, Cli, image_project, store, write_images

from patchwork_cli.store.features import DONE, FAILED
from patchwork_cli.util.images import load_image

pytestmark = pytest.mark.tensorflow


@pytest.mark.slow
def test_features_are_the_models_output_for_each_image(tmp_path, tiny_model):
    project = image_project(tmp_path, 40, tiny_model, runtime="keras")
    result = Cli(project)("extract", "--json")
    report = json.loads(result.stdout)
    assert report["processed"] == 40 and report["done"] == 40 and report["failed"] == 0
    assert report["runtime"] == "keras" and report["precision"] == "exact" and report["note"] == ""
    assert "extracted 40 image(s) with tiny.keras on keras (exact)" in result.stderr
    features = store(project)["features"]
    assert features.shape == (40, 16, 16, 64) and features.dtype == np.float16
    model = keras.models.load_model(tiny_model)
    pixels = np.stack([load_image(str(p), IMSHAPE) for p in sorted((tmp_path / "images").iterdir())])
    expected = model.predict(pixels.astype(np.float32), verbose=0).astype(np.float16)
    np.testing.assert_array_equal(features[:], expected)
    attrs = store(project).attrs["extractor"]
    assert (
        attrs["name"] == "tiny.keras" and attrs["output_shape"] == [16, 16, 64] and len(attrs["weights_sha256"]) == 64
    )
    assert attrs["precision"] == "exact"
    assert "features    40 done, 0 failed, 0 pending  (tiny.keras)" in Cli(project)("status").stdout


@pytest.mark.slow
def test_bad_images_are_recorded_not_fatal(tmp_path, tiny_model):
    project = image_project(tmp_path, 6, tiny_model)
    images = sorted((tmp_path / "images").iterdir())
    images[1].write_bytes(b"")
    images[3].write_text("this is not a picture")
    data = images[4].read_bytes()
    images[4].write_bytes(data[: len(data) // 2])
    result = Cli(project)("extract")
    assert "3 image(s) failed; reasons in features_failures.csv" in result.stderr
    status = store(project)["status"][:]
    assert status.tolist() == [DONE, FAILED, DONE, FAILED, FAILED, DONE]
    lines = (project / "features_failures.csv").read_text().splitlines()
    assert lines[0] == "row,filepath,reason"
    assert lines[1].startswith("1,../images/img_0001.png,not an image")
    assert lines[3].startswith("4,../images/img_0004.png,unreadable")
    assert Cli(project)("extract", "--strict", expect=1).exit_code == 1
    # a fixed file is retried only when asked: failed rows stay failed on a plain rerun
    assert json.loads(Cli(project)("extract", "--json").stdout)["processed"] == 0
    images[1].write_bytes(images[0].read_bytes())
    report = json.loads(Cli(project)("extract", "--retry-failed", "--json").stdout)
    assert report["processed"] == 3 and report["done"] == 4 and report["failed"] == 2
    features = store(project)["features"]
    np.testing.assert_array_equal(features[1], features[0])
    assert len((project / "features_failures.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_pooling_stores_vectors(tmp_path, tiny_model):
    project = image_project(tmp_path, 5, tiny_model, pooling="avg")
    Cli(project)("extract")
    features = store(project)["features"]
    assert features.shape == (5, 64)
    model = keras.models.load_model(tiny_model)
    first = load_image(str(tmp_path / "images" / "img_0000.png"), IMSHAPE)[None].astype(np.float32)
    np.testing.assert_allclose(features[0], model.predict(first, verbose=0).mean(axis=(1, 2))[0], rtol=2e-3, atol=1e-3)


@pytest.mark.slow
def test_two_shards_equal_one_unsharded_run(tmp_path, tiny_model):
    whole = image_project(tmp_path, 600, tiny_model, name="whole")
    sharded = image_project(tmp_path, 600, tiny_model, name="sharded")
    Cli(whole)("extract")
    first = json.loads(Cli(sharded)("extract", "--shard", "1/2", "--json").stdout)
    assert first["done"] == 256 + 88 and first["pending"] == 256  # chunks 0 and 2 of 0..2 (256 rows each)
    second = json.loads(Cli(sharded)("extract", "--shard", "2/2", "--json").stdout)
    assert second["processed"] == 256 and second["pending"] == 0
    np.testing.assert_array_equal(store(whole)["features"][:], store(sharded)["features"][:])
    assert "--shard: expected K/N" in Cli(sharded)("extract", "--shard", "2", expect=1).stderr
    assert "between 1 and N" in Cli(sharded)("extract", "--shard", "3/2", expect=1).stderr


def test_add_then_extract_does_only_the_new_rows(tmp_path, tiny_model):
    project = image_project(tmp_path, 20, tiny_model)
    Cli(project)("extract")
    before = store(project)["features"][:]
    write_images(tmp_path / "more", 5, prefix="more")
    Cli(project)("add", "../more")
    assert "features    20 done, 0 failed, 5 pending" in Cli(project)("status").stdout
    report = json.loads(Cli(project)("extract", "--json").stdout)
    assert report["processed"] == 5 and report["done"] == 25
    after = store(project)["features"][:]
    np.testing.assert_array_equal(after[:20], before)
    fresh = image_project(tmp_path, 0, tiny_model, name="fresh")
    Cli(tmp_path)("add", "more", "--project", "fresh")
    Cli(fresh)("extract")
    np.testing.assert_array_equal(store(fresh)["features"][:], after)


@pytest.mark.slow
def test_a_different_extractor_is_refused_unless_overwrite(tmp_path, tiny_model):
    project = image_project(tmp_path, 4, tiny_model)
    Cli(project)("extract")
    other = tmp_path / "other.keras"
    keras.utils.set_random_seed(1)
    inputs = keras.Input((*IMSHAPE, 3))
    keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)).save(other)
    result = Cli(project)("extract", "--model", str(other), expect=1)
    assert "features.zarr holds features from 'tiny.keras'" in result.stderr and "--overwrite" in result.stderr
    assert store(project)["features"].shape == (4, 16, 16, 64)
    Cli(project)("extract", "--model", str(other), "--overwrite")
    assert store(project)["features"].shape == (4, 30, 30, 4)


def test_user_model_errors(tmp_path, tiny_model):
    project = image_project(tmp_path, 2, tiny_model)
    cli = Cli(project)
    assert "no such model file" in cli("extract", "--model", "missing.keras", expect=1).stderr
    assert "unknown extractor 'resnet'" in cli("extract", "--model", "resnet", expect=1).stderr
    (project / "broken.keras").write_bytes(b"not a zip")
    assert "not a Keras model Keras can load" in cli("extract", "--model", "broken.keras", expect=1).stderr
    assert "unknown keras application 'NoSuchNet'" in cli("extract", "--model", "keras:NoSuchNet", expect=1).stderr


@pytest.mark.slow
def test_keras_application_offline_is_a_clear_error(tmp_path, tiny_model):
    project = image_project(tmp_path, 2, tiny_model)
    result = Cli(project)("extract", "--model", "keras:MobileNetV2", expect=1)
    assert "keras:MobileNetV2: could not get its ImageNet weights" in result.stderr
    assert "efficientnet_lite0" in result.stderr and result.stdout == ""


def test_from_npy(tmp_path, tiny_model):
    project = image_project(tmp_path, 10, tiny_model)
    cli = Cli(project)
    np.save(project / "short.npy", np.zeros((9, 8), np.float32))
    assert (
        "short.npy: shape (9, 8) does not fit the project: expected (10, ...)"
        in cli("extract", "--from-npy", "short.npy", expect=1).stderr
    )
    assert not (project / "features.zarr").exists()
    values = np.arange(80, dtype=np.float32).reshape(10, 8)
    values[3, 2] = np.nan
    np.save(project / "feats.npy", values)
    report = json.loads(cli("extract", "--from-npy", "feats.npy", "--json").stdout)
    assert report["done"] == 9 and report["failed"] == 1
    got = store(project)["features"][:]
    np.testing.assert_array_equal(np.delete(got, 3, axis=0), np.delete(values, 3, axis=0).astype(np.float16))
    assert "not finite" in (project / "features_failures.csv").read_text()
    assert "holds features from 'npy:feats.npy'" in cli("extract", expect=1).stderr


@pytest.mark.slow
def test_killed_extract_resumes_to_the_identical_store(tmp_path, tiny_model):
    killed = image_project(tmp_path, 1500, tiny_model, name="killed")
    reference = image_project(tmp_path, 1500, tiny_model, name="reference")
    Cli(reference)("extract")
    chunk_dir = killed / "features.zarr" / "features" / "c"
    process = subprocess.Popen(
        [sys.executable, "-m", "patchwork_cli", "extract"],
        cwd=killed,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if chunk_dir.exists() and sum(1 for _ in chunk_dir.rglob("*") if _.is_file()) >= 2:
            break
        time.sleep(0.005)
    assert process.poll() is None, "extract finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = store(killed)["status"][:]
    assert 0 < (partial == DONE).sum() < 1500
    report = json.loads(Cli(killed)("extract", "--json").stdout)
    assert report["processed"] == 1500 - (partial == DONE).sum() and report["pending"] == 0
    np.testing.assert_array_equal(store(killed)["features"][:], store(reference)["features"][:])
    np.testing.assert_array_equal(store(killed)["status"][:], store(reference)["status"][:])
