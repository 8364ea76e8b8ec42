"""SIGKILL `patchwork extract` and `patchwork train` (real processes, TensorFlow and all) at random
moments: a resumed extract writes exactly what an uninterrupted one writes, and LATEST always
names a complete run. Also: bad image files go through a real extract without stopping it."""

from __future__ import annotations

import collections
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from builders import Cli, feature_project, write_images

from patchwork_cli.store import runs
from patchwork_cli.store.features import DONE, FAILED, PENDING, FeatureStore
from patchwork_cli.store.run_metrics import METRICS_FILE
from reliability.builders import report

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

KILLS = 3  # each costs a TensorFlow start-up (about 5 s), so fewer than the label store's 40
IMSHAPE = (32, 32)
RUN_FILES = (runs.MODEL_FILE, runs.RUN_FILE, METRICS_FILE, runs.HISTORY_FILE, runs.PREDICTIONS_NAME)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A small deterministic conv net on 32x32 RGB: 16x16x64 feature maps (256-row chunks)."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((*IMSHAPE, 3))
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(
        keras.layers.Rescaling(1 / 255)(inputs)
    )
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    keras.Model(inputs, x).save(path)
    return path


def image_project(root: Path, name: str, model: Path) -> Path:
    Cli(root)("init", name, "--images", "images", "--classes", "a,b")
    return image_project_config(root / name, model)


def run_cli(*args, cwd: Path, kill_when=None, delay: float = 0.0) -> tuple[int, str]:
    """`python -m patchwork_cli ARGS` as a real process, SIGKILLed `delay` seconds after `kill_when()`
    first holds (polled every 2 ms): kills land at chosen stages of the work, not in TensorFlow's start-up."""
    process = subprocess.Popen(
        [sys.executable, "-m", "patchwork_cli", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if kill_when is not None:
        deadline = time.monotonic() + 300
        while process.poll() is None and not kill_when() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr.decode(errors="replace")


def status_chunks_written(project: Path) -> int:
    directory = project / "features.zarr" / "status" / "c"
    return sum(1 for _ in directory.iterdir()) if directory.exists() else 0


def chunks_past(project: Path, count: int) -> bool:
    return status_chunks_written(project) >= count


def test_killed_extract_resumes_to_the_identical_store(tmp_path, tiny_model):
    rows = 768  # three chunks of 256 rows
    write_images(tmp_path / "images", rows)
    reference = image_project(tmp_path, "reference", tiny_model)
    Cli(reference)("extract")
    reference_store = zarr.open_group(str(reference / "features.zarr"), mode="r")
    expected = reference_store["features"][:]
    records = {name: reference_store[name][:] for name in ("file_signature", "thumbnail")}

    killed = image_project(tmp_path, "killed", tiny_model)
    rng = random.Random(5)
    outcomes = collections.Counter()
    for iteration in range(KILLS):
        if iteration == 0:
            when = _after(rng.uniform(1, 6))  # in start-up, or creating the store, or in the first chunk
        else:
            when = functools.partial(chunks_past, killed, status_chunks_written(killed) + 1)  # then in the next
        code, stderr = run_cli("extract", cwd=killed, kill_when=when, delay=rng.uniform(0, 0.4))
        assert code in (0, -9) and "Traceback" not in stderr, stderr
        assert Cli(killed)("status").exit_code == 0  # the project opens cleanly
        outcomes["killed" if code == -9 else "finished first"] += 1
        store = FeatureStore.open(killed / "features.zarr")
        if store is None:
            outcomes[f"kill {iteration + 1}: before the store existed"] += 1
            continue
        status = store.status()
        assert set(np.unique(status)) <= {PENDING, DONE}
        done = status == DONE
        # every row marked done already holds exactly the uninterrupted run's features
        np.testing.assert_array_equal(store.features.get_orthogonal_selection((np.flatnonzero(done),)), expected[done])
        for name, values in records.items():  # and the file's signature and thumbnail, written before its status
            np.testing.assert_array_equal(
                store.group[name].get_orthogonal_selection((np.flatnonzero(done),)), values[done]
            )
        outcomes[f"kill {iteration + 1}: rows done"] = int(done.sum())
    Cli(killed)("extract")
    store = zarr.open_group(str(killed / "features.zarr"), mode="r")
    np.testing.assert_array_equal(store["features"][:], expected)
    for name, values in records.items():
        np.testing.assert_array_equal(store[name][:], values)
    assert (store["status"][:] == DONE).all()
    report("extract, SIGKILL then resume", iterations=KILLS, rows=rows, **outcomes)


def test_killed_engine_conversion_leaves_a_cache_the_next_extract_trusts(tmp_path, tiny_model, monkeypatch):
    """The first extract with a new extractor converts it for LiteRT into the user's cache; SIGKILLed
    while it converts and records, the cache holds a whole conversion or none that counts, and the
    next extract converts again (or uses the whole one) and writes the same features."""
    rows = 64
    write_images(tmp_path / "images", rows)
    reference = image_project(tmp_path, "reference", tiny_model)
    Cli(reference)("extract")  # with the session's warm cache
    expected = zarr.open_group(str(reference / "features.zarr"), mode="r")["features"][:]

    cache = tmp_path / "cache"
    monkeypatch.setenv("PATCHWORK_CACHE", str(cache))  # the children's cache: empty at first
    killed = image_project(tmp_path, "killed", tiny_model)
    rng = random.Random(12)
    outcomes = collections.Counter()
    for iteration in range(KILLS):
        shutil.rmtree(cache, ignore_errors=True)
        when = (cache / "engines").exists
        code, stderr = run_cli("extract", cwd=killed, kill_when=when, delay=rng.uniform(0, 1.5))
        assert code in (0, -9) and "Traceback" not in stderr, stderr
        records = sorted(p.name for p in (cache / "engines").glob("*.json"))
        if records:  # a record is written last: the model and the reference beside it are whole
            stem = records[0].removesuffix(".json")
            assert (cache / "engines" / f"{stem}.tflite").stat().st_size > 0
            assert np.load(cache / "engines" / f"{stem}.reference.npy").shape[0] > 0
        outcomes["killed" if code == -9 else "finished first"] += 1
        outcomes[f"kill {iteration + 1}: conversion recorded"] = bool(records)
        result = Cli(killed)("extract", "--json")
        assert json.loads(result.stdout)["runtime"] == "litert"
        store = zarr.open_group(str(killed / "features.zarr"), mode="r")
        np.testing.assert_array_equal(store["features"][:], expected)
        shutil.rmtree(killed / "features.zarr")
    report("extract, SIGKILL in the engine conversion", iterations=KILLS, rows=rows, **outcomes)


def features_by_filepath(project: Path) -> dict[str, np.ndarray]:
    """Each image's features, for the rows marked done, read through the store's own record of its rows."""
    store = FeatureStore.open(project / "features.zarr")
    done = np.flatnonzero(store.status()[: len(store.filepaths())] == DONE)
    values = store.features.get_orthogonal_selection((done,))
    filepaths = store.filepaths()
    return {filepaths[row]: values[k] for k, row in enumerate(done)}


def test_killed_extract_after_a_hand_edit_keeps_every_image_with_its_features(tmp_path, tiny_model):
    """labels.csv gets rows pasted into the middle and is sorted in pandas; an extract killed at
    random moments (while the new images get rows, and while they are extracted) never leaves an
    image holding another image's features, and resumes to what an uninterrupted extract writes."""
    write_images(tmp_path / "images", 600)
    listing = sorted((tmp_path / "images").iterdir())
    (tmp_path / "first.txt").write_text("".join(f"images/{p.name}\n" for p in listing[:512]))
    projects = {}
    for name in ("reference", "killed"):
        Cli(tmp_path)("init", name, "--images", "first.txt", "--classes", "a,b")
        projects[name] = image_project_config(tmp_path / name, tiny_model)
        Cli(projects[name])("extract")
        table = pd.read_csv(projects[name] / "labels.csv", keep_default_na=False, dtype=str)
        pasted = table.iloc[:88].assign(filepath=[f"../images/{p.name}" for p in listing[512:]])
        edited = pd.concat([table.iloc[:200], pasted, table.iloc[200:]]).sort_values("filepath", ascending=False)
        edited.to_csv(projects[name] / "labels.csv", index=False)
    Cli(projects["reference"])("extract")
    expected = features_by_filepath(projects["reference"])
    assert len(expected) == 600

    killed = projects["killed"]
    rng = random.Random(8)
    outcomes = collections.Counter()
    for iteration in range(KILLS):
        code, stderr = run_cli("extract", cwd=killed, kill_when=_after(rng.uniform(1, 7)), delay=0.0)
        assert code in (0, -9) and "Traceback" not in stderr, stderr
        assert Cli(killed)("status").exit_code == 0
        outcomes["killed" if code == -9 else "finished first"] += 1
        found = features_by_filepath(killed)
        for path, values in found.items():
            np.testing.assert_array_equal(values, expected[path], err_msg=path)
        outcomes[f"kill {iteration + 1}: images with features"] = len(found)
    report_json = Cli(killed)("extract", "--json").stdout
    assert '"pending": 0' in report_json and '"unused": 0' in report_json
    found = features_by_filepath(killed)
    assert found.keys() == expected.keys()
    for path, values in found.items():
        np.testing.assert_array_equal(values, expected[path], err_msg=path)
    report("extract after a hand edit (rows pasted in, sorted), SIGKILL then resume", iterations=KILLS, **outcomes)


def image_project_config(project: Path, model: Path) -> Path:
    config_path = project / "patchwork.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["imshape"] = list(IMSHAPE)
    config["extractor"].update(name=str(model), batch_size=16)
    config_path.write_text(yaml.safe_dump(config))
    return project


def assert_runs_are_whole(project: Path) -> str:
    """LATEST names a complete run, and every run listed is complete; returns LATEST."""
    latest = runs.latest_run(project)
    assert latest is not None and (runs.models_dir(project) / runs.LATEST_NAME).read_text().strip() == latest
    for run_id in runs.list_runs(project):
        assert all((runs.models_dir(project) / run_id / name).exists() for name in RUN_FILES), run_id
    visible = [p.name for p in runs.models_dir(project).iterdir() if not p.name.startswith(".")]
    assert sorted(visible) == sorted([*runs.list_runs(project), runs.LATEST_NAME]), visible
    return latest


def test_killed_train_leaves_latest_on_a_complete_run(tmp_path):
    project, _ = feature_project(
        tmp_path, rows=300, labelled=200, validation=50, epochs=4, batches_per_epoch=10, learning_rate=0.001
    )
    Cli(project)("train")
    first = assert_runs_are_whole(project)
    rng = random.Random(6)
    outcomes = collections.Counter()

    def staging_begun():
        return any(p.name.startswith(runs.STAGING_PREFIX) for p in runs.models_dir(project).iterdir())

    for iteration in range(KILLS):
        if iteration == 0:
            when, delay = _after(rng.uniform(3, 8)), 0.0  # in start-up or fit
        else:
            when, delay = staging_begun, rng.uniform(0, 0.3)  # while the run is written and published
        code, stderr = run_cli("train", cwd=project, kill_when=when, delay=delay)
        assert code in (0, -9) and "Traceback" not in stderr, stderr
        latest = assert_runs_are_whole(project)
        outcomes["finished first" if code == 0 else "killed"] += 1
        outcomes["LATEST moved on" if latest != first else "LATEST kept"] += 1
        first = latest
        assert Cli(project)("evaluate").exit_code == 0
    staged = [p for p in runs.models_dir(project).iterdir() if p.name.startswith(runs.STAGING_PREFIX)]
    outcomes["half-written runs left behind (hidden, never listed)"] = len(staged)
    report("train, SIGKILL", iterations=KILLS, **outcomes)


def _after(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def test_bad_images_are_recorded_and_the_rest_extracted(tmp_path, tiny_model):
    """Truncated, empty, not-an-image, a decompression bomb, one pixel and huge, in one real extract."""
    images = write_images(tmp_path / "images", 4)
    bad = {
        "zero bytes": b"",
        "not an image": b"hello, I am text\n",
        "truncated": images[0].read_bytes()[: len(images[0].read_bytes()) // 2],
    }
    for name, data in bad.items():
        (tmp_path / "images" / f"{name}.png").write_bytes(data)
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "images" / "one pixel.png")
    Image.new("RGB", (6000, 4000), (10, 200, 10)).save(tmp_path / "images" / "huge.jpg", quality=80)
    bomb = tmp_path / "images" / "bomb.png"
    Image.new("L", (10000, 10000)).save(bomb)  # 100 megapixels of zeros: a small file
    project = image_project(tmp_path, "proj", tiny_model)
    result = Cli(project)("extract", "--json")
    assert "4 image(s) failed" in result.stderr
    table = pd.read_csv(project / "features_failures.csv")
    reasons = dict(zip(table["filepath"].map(lambda p: Path(p).stem), table["reason"], strict=True))
    assert set(reasons) == {"zero bytes", "not an image", "truncated", "bomb"}
    assert reasons["bomb"].startswith("refused: 10000x10000 pixels")
    assert reasons["truncated"].startswith("unreadable")
    status = zarr.open_group(str(project / "features.zarr"), mode="r")["status"][:]
    assert (status == DONE).sum() == 6 and (status == FAILED).sum() == 4
