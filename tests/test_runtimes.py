"""Extractor runtimes (issue [12]): LiteRT and OpenVINO against Keras on real photographs, the
store's record of the precision, the refusal to mix precisions, the fallbacks when an engine's
package or the CPU's bfloat16 is missing, and the disk guard on a real full file system."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import yaml
import zarr
from builders import Cli, image_project, snapshot
from PIL import Image

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extraction.on_cluster import ExtractorSpec
from patchwork_cli.extractors import engine_openvino, runtimes
from patchwork_cli.extractors.conversion import TFLITE_SUFFIX
from patchwork_cli.extractors.loading import load_extractor
from patchwork_cli.store.config import RUNTIMES
from patchwork_cli.util.images import load_image

pytestmark = pytest.mark.tensorflow

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins")


def write_photos(directory: Path) -> list[Path]:
    """Twelve real photographs as JPEGs, sorted by name (labels.csv's order): each of PHOTOS, whole
    and a cropped, flipped view."""
    directory.mkdir(parents=True)
    paths = []
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        h, w = photo.shape[:2]
        for view, pixels in (("whole", photo), ("crop", photo[h // 4 :, : 3 * w // 4, :][:, ::-1])):
            paths.append(directory / f"{name}_{view}.jpg")
            Image.fromarray(np.ascontiguousarray(pixels)).save(paths[-1], quality=90)
    return sorted(paths)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_photos(tmp_path_factory.mktemp("photos") / "images")


@pytest.fixture(scope="module")
def keras_features(photos) -> np.ndarray:
    """EfficientNet-Lite0's pooled features of the photos, computed by Keras itself."""
    extractor = load_extractor("efficientnet_lite0", (224, 224), "avg")
    pixels = np.stack([load_image(str(p), (224, 224)) for p in photos]).astype(np.float32)
    return np.asarray(extractor.model.predict_on_batch(pixels))


def make_project(root: Path, photos: list[Path], **extractor) -> Path:
    """A project over the photos, EfficientNet-Lite0 pooled to vectors, float32 features."""
    root.mkdir(parents=True, exist_ok=True)
    Cli(root)("init", "proj", "--images", str(photos[0].parent), "--classes", "a,b")
    config_path = root / "proj" / "patchwork.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["extractor"].update(pooling="avg", dtype="float32", batch_size=8, **extractor)
    config_path.write_text(yaml.safe_dump(config))
    return root / "proj"


def stored(project: Path) -> zarr.Group:
    return zarr.open_group(str(project / "features.zarr"), mode="r")


def relative_error(features: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(features - reference).max() / np.abs(reference).max())


def test_the_keras_engine_runs_a_batch_in_parts_and_gives_keras_own_outputs(photos, keras_features):
    extractor = load_extractor("efficientnet_lite0", (224, 224), "avg")
    engine = runtimes.keras_engine(extractor.model, batch_size=8)
    pixels = np.stack([load_image(str(p), (224, 224)) for p in photos]).astype(np.float32)
    outputs = np.concatenate([engine.predict(pixels[:8]), engine.predict(pixels[8:])])  # the second batch padded
    assert relative_error(outputs, keras_features) <= runtimes.EXACT_TOLERANCE
    # a row's output does not depend on its batch companions
    np.testing.assert_array_equal(engine.predict(pixels[8:9])[0], outputs[8])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["keras", "litert", "openvino", "auto"])
def test_every_runtime_gives_keras_features_on_real_photographs(tmp_path, photos, keras_features, runtime):
    project = make_project(tmp_path, photos, runtime=runtime)
    assert [Path(line.split(",")[0]).name for line in (project / "labels.csv").read_text().splitlines()[1:]] == [
        p.name for p in photos
    ]
    report = json.loads(Cli(project)("extract", "--json").stdout)
    assert report["runtime"] == ("litert" if runtime == "auto" else runtime) and report["precision"] == "exact"
    features = stored(project)["features"][:]
    assert features.shape == (12, 1280)
    assert relative_error(features, keras_features) <= runtimes.EXACT_TOLERANCE
    # and not trivially: the photographs' features differ from one another
    assert np.abs(features[0] - features[2]).max() > 0.1


@pytest.mark.slow
def test_exact_features_of_any_runtime_share_a_store_and_a_fast_store_is_not_mixed_in(tmp_path, photos):
    project = make_project(tmp_path, photos, runtime="litert")
    cli = Cli(project)
    labels = (project / "labels.csv").read_text()
    (project / "labels.csv").write_text("\n".join(labels.splitlines()[:7]) + "\n")  # the first six images
    cli("extract")
    (project / "labels.csv").write_text(labels)
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["extractor"]["runtime"] = "openvino"
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    report = json.loads(cli("extract", "--json").stdout)  # the same store goes on: exact is exact
    assert report["processed"] == 6 and report["done"] == 12 and report["runtime"] == "openvino"
    assert stored(project).attrs["extractor"]["precision"] == "exact"

    # A store of fast features (made on a CPU with bfloat16) is never added to with exact ones.
    group = zarr.open_group(str(project / "features.zarr"), mode="r+")
    group.attrs["extractor"] = {**group.attrs["extractor"], "precision": runtimes.FAST_OPENVINO}
    (project / "labels.csv").write_text(labels + f"{photos[0].parent}/extra.jpg,,,,,\n")
    Image.open(photos[0]).save(photos[0].parent / "extra.jpg")
    try:
        before = snapshot(project)
        result = cli("extract", expect=1)
        assert "(precision: 'fast:openvino-bf16' there, 'exact' now); pass --overwrite" in result.stderr
        assert snapshot(project) == before
        assert json.loads(cli("extract", "--overwrite", "--json").stdout)["done"] == 13
        assert stored(project).attrs["extractor"]["precision"] == "exact"
    finally:
        (photos[0].parent / "extra.jpg").unlink()


@pytest.mark.slow
def test_fast_precision_records_what_the_cpu_could_do(tmp_path, photos, keras_features):
    project = make_project(tmp_path, photos, precision="fast")
    result = Cli(project)("extract", "--json")
    report = json.loads(result.stdout)
    features = stored(project)["features"][:]
    if engine_openvino.has_bfloat16():  # a CPU with AVX512-BF16 or AMX
        assert report["runtime"] == "openvino" and report["precision"] == runtimes.FAST_OPENVINO
        cosine = (features * keras_features).sum(1) / np.linalg.norm(features, axis=1)
        assert (cosine / np.linalg.norm(keras_features, axis=1)).min() >= runtimes.FAST_MIN_COSINE
    else:  # this CPU has no bfloat16: exact features, and the summary says why
        assert report["precision"] == "exact" and report["runtime"] == "litert"
        assert "note: precision fast needs OpenVINO on a CPU with bfloat16" in result.stderr
        assert relative_error(features, keras_features) <= runtimes.EXACT_TOLERANCE
    assert stored(project).attrs["extractor"]["precision"] == report["precision"]


@pytest.mark.slow
def test_without_the_engine_packages_auto_falls_back_and_an_explicit_runtime_is_an_error(
    tmp_path, photos, keras_features, monkeypatch
):
    # None in sys.modules is how Python marks a module as not importable
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    project = make_project(tmp_path, photos)
    report = json.loads(Cli(project)("extract", "--json").stdout)
    assert report["runtime"] == "openvino" and report["note"] == ""

    monkeypatch.setitem(sys.modules, "openvino", None)
    other = make_project(tmp_path / "other", photos)
    result = Cli(other)("extract", "--json")
    report = json.loads(result.stdout)
    assert report["runtime"] == "keras" and "no inference engine installed" in result.stderr
    assert relative_error(stored(other)["features"][:], keras_features) <= runtimes.EXACT_TOLERANCE

    explicit = make_project(tmp_path / "explicit", photos, runtime="litert")
    before = snapshot(explicit)
    result = Cli(explicit)("extract", expect=1)
    assert result.stderr.strip().splitlines()[-1] == (
        "error: extractor.runtime: litert needs the package ai-edge-litert, which is not installed "
        "(pip install ai-edge-litert); or set runtime: auto"
    )
    assert snapshot(explicit) == before


def test_each_configurable_runtime_but_auto_is_an_engine_that_knows_its_file():
    assert set(runtimes.ENGINES) == set(RUNTIMES) - {"auto"}
    assert list(runtimes.ENGINES)[-1] == "keras"  # auto's last resort
    for name, engine in runtimes.ENGINES.items():
        assert engine.NAME == name and callable(engine.artefact) and callable(engine.load)
        assert engine.FILE == (None if name == "keras" else TFLITE_SUFFIX)
        assert (engine.PACKAGE is None) == (name == "keras")


def test_the_choice_is_made_once_and_a_worker_without_its_engine_refuses_it(monkeypatch):
    choice = runtimes.choose_runtime("auto", "exact")
    assert choice == runtimes.RuntimeChoice("litert", runtimes.EXACT) and choice.file == TFLITE_SUFFIX
    assert pickle.loads(pickle.dumps(choice)) == choice  # what a Dask worker is sent
    monkeypatch.setattr(engine_openvino, "has_bfloat16", lambda: False)
    assert runtimes.choose_runtime("openvino", "fast") == runtimes.RuntimeChoice(
        "openvino",
        runtimes.EXACT,
        "precision fast needs OpenVINO on a CPU with bfloat16 (AVX512-BF16 or AMX), which this one lacks: "
        "exact features instead",
    )
    fast = runtimes.RuntimeChoice("openvino", runtimes.FAST_OPENVINO)
    assert "bfloat16" in runtimes.cannot_run(fast)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # this "worker" lacks LiteRT
    assert runtimes.choose_runtime("auto", "exact").runtime == "openvino"  # which the client would not run
    spec = ExtractorSpec("efficientnet_lite0", (224, 224), "avg", choice, 8)
    with pytest.raises(PatchworkError, match="cannot run the extractor on litert, as the coordinator chose: litert"):
        spec.load()


def test_a_bad_runtime_or_precision_in_the_config_is_one_line(tmp_path, photos):
    project = make_project(tmp_path, photos, runtime="tensorrt")
    result = Cli(project)("extract", expect=1)
    assert "extractor.runtime" in result.stderr and "tensorrt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_engine_is_checked_against_keras_when_it_opens(photos):
    extractor = load_extractor("efficientnet_lite0", (224, 224), "avg")
    engine = runtimes.open_extractor_engine(extractor, runtimes.choose_runtime("litert", "exact"), 4)
    from patchwork_cli.extractors.conversion import cached_extractor_model, check_batch

    _, reference = cached_extractor_model(extractor)
    batch = check_batch(extractor.imshape, extractor.channels)
    runtimes.check_engine(engine, batch, reference, "lite0")  # passes
    with pytest.raises(Exception, match="differ from Keras' by .* of their range"):
        runtimes.check_engine(engine, batch, reference * 1.01, "lite0")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="mounting a file system needs root")
def test_extract_stops_before_the_disk_fills_and_resumes_when_there_is_room(tmp_path):
    """The store on a real small file system (tmpfs) with room for its first chunks but not all:
    extract stops with a one-line error, keeps what it wrote, and, once the file system is grown,
    goes on to exactly the store an extract with room to spare writes."""
    model = _tiny_keras_model(tmp_path / "tiny.keras")
    project = image_project(tmp_path, 1024, model, name="proj")  # 4 chunks of 256 rows
    cli = Cli(project)
    cli("extract")
    reference = zarr.open_group(str(project / "features.zarr"), mode="r")
    first_chunk = [path for array in (project / "features.zarr").iterdir() if (path := array / "c" / "0").exists()]
    chunk_bytes = sum(f.stat().st_size for path in first_chunk for f in [path, *path.rglob("*")] if f.is_file())
    assert chunk_bytes > 4 * 2**20  # the float16 maps of 256 images of noise: about 8 MiB raw
    pages = lambda count: -(-int(count) // 4096) * 4096  # noqa: E731

    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages(2.5 * chunk_bytes)}", "tmpfs", str(mount)], check=True)
    try:
        config = yaml.safe_load((project / "patchwork.yaml").read_text())
        config["storage"]["features"] = str(mount / "features.zarr")
        (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
        labels_before = (project / "labels.csv").read_bytes()
        result = cli("extract", expect=1)
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith(f"error: {mount / 'features.zarr'}: stopped before the disk fills: the 3 chunks ")
        assert "The 256 image(s) extracted in this run are kept" in message and "run extract again" in message
        assert (project / "labels.csv").read_bytes() == labels_before
        status = zarr.open_group(str(mount / "features.zarr"), mode="r")["status"][:]
        assert (status[:256] == 1).all() and (status[256:] == 0).all()

        subprocess.run(["mount", "-o", f"remount,size={pages(8 * chunk_bytes)}", str(mount)], check=True)
        report = json.loads(cli("extract", "--json").stdout)
        assert report["processed"] == 768 and report["done"] == 1024
        resumed = zarr.open_group(str(mount / "features.zarr"), mode="r")
        np.testing.assert_array_equal(resumed["features"][:], reference["features"][:])
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _tiny_keras_model(path: Path) -> Path:
    """A small conv net whose 16x16x64 feature maps of random images compress little."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((32, 32, 3))
    rescaled = keras.layers.Rescaling(1 / 255)(inputs)
    keras.Model(inputs, keras.layers.Conv2D(64, 3, strides=2, padding="same")(rescaled)).save(path)
    return path
