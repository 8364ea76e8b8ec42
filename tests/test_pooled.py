"""features.zarr's pooled copy of feature maps: written with every chunk, built once for an
older store, and read by train's prediction pass for heads that average the maps first."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
import zarr
from builders import Cli, write_images

from patchwork_cli.store import runs
from patchwork_cli.store.features import POOLED_NAME, FeatureStore

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

IMSHAPE = (32, 32)


@pytest.fixture(scope="module")
def maps_model(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(11)
    inputs = keras.Input((*IMSHAPE, 3))
    x = keras.layers.Conv2D(12, 3, strides=4, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    path = tmp_path_factory.mktemp("models") / "maps.keras"
    keras.Model(inputs, x).save(path)
    return path


def maps_project(root: Path, model: Path, head: str) -> Path:
    write_images(root / "images", 40)
    Cli(root)("init", "proj", "--images", "images", "--classes", "a,b")
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["imshape"] = list(IMSHAPE)
    config["extractor"].update(name=str(model), batch_size=8)
    config["model"]["head"] = head
    config["training"].update(epochs=2, batches_per_epoch=5, batch_size=8)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    Cli(project)("extract")
    table = (project / "labels.csv").read_text().splitlines()
    edits = ["filepath,a,b"] + [f"{line.split(',')[0]},{i % 2},{(i // 2) % 2}" for i, line in enumerate(table[1:21])]
    (project / "edits.csv").write_text("\n".join(edits) + "\n")
    Cli(project)("label", "--import", "edits.csv")
    return project


def test_the_pooled_copy_is_the_average_of_each_map(tmp_path, maps_model):
    project = maps_project(tmp_path, maps_model, "pool:avg")
    group = zarr.open_group(str(project / "features.zarr"), mode="r")
    maps = group["features"][:].astype(np.float32)
    assert group[POOLED_NAME].shape == (40, maps.shape[-1])
    np.testing.assert_allclose(group[POOLED_NAME][:], maps.mean(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("head", ["pool:avg", "mlp:8", "conv:8"])
def test_predictions_from_the_pooled_copy_equal_the_models_on_the_maps(tmp_path, maps_model, head):
    project = maps_project(tmp_path, maps_model, head)
    run_id = json.loads(Cli(project)("train", "--json").stdout)["run_id"]
    run_dir = runs.models_dir(project) / run_id
    model = keras.models.load_model(run_dir / runs.MODEL_FILE, compile=False)
    maps = zarr.open_group(str(project / "features.zarr"), mode="r")["features"][:].astype(np.float32)
    stored = zarr.open_array(str(run_dir / runs.PREDICTIONS_NAME), mode="r")[:]
    np.testing.assert_allclose(stored, model.predict(maps, verbose=0), rtol=0, atol=1e-5)


def test_an_older_store_gets_its_pooled_copy_once(tmp_path, maps_model):
    project = maps_project(tmp_path, maps_model, "pool:avg")
    group = zarr.open_group(str(project / "features.zarr"), mode="r+")
    expected = group[POOLED_NAME][:]
    del group[POOLED_NAME]  # as a store written before stores kept the copy
    del group.attrs[POOLED_NAME]
    assert FeatureStore.open(project / "features.zarr").needs_pooled()
    result = Cli(project)("extract")
    assert "extracted 0 image(s)" in result.stderr
    store = FeatureStore.open(project / "features.zarr")
    assert not store.needs_pooled()
    np.testing.assert_array_equal(store.pooled[:], expected)
