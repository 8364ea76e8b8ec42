"""Builders of projects and data for the tests: image files, the in-process CLI, projects over
images or random features, a trained project, hand-written runs (the reliability tests' fork
server, random label edits and checks are in tests/reliability/builders.py). Test modules import
from here (tests/ is on sys.path because tests/conftest.py is a rootdir conftest); fixtures stay
in the conftest.py files.

Importing this module is cheap: TensorFlow and Keras are imported only inside the builders that
make a Keras model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
import zarr
from PIL import Image
from typer.testing import CliRunner

from patchwork_cli.cli.app import app
from patchwork_cli.store import runs

# --- image files, the CLI, snapshots --------------------------------------------------------

CLASSES = ["cat", "dog", "bird"]  # the classes of the project_dir fixture


def write_images(directory: Path, count: int, prefix: str = "img") -> list[Path]:
    """`count` small real PNG files with distinct random content."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(prefix) + count)
    paths = []
    for i in range(count):
        path = directory / f"{prefix}_{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


class Cli:
    """Runs `patchwork ...` in-process from a working directory."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, expect: int | None = 0):
        previous = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = self.runner.invoke(app, [str(a) for a in args], input=input)
        finally:
            os.chdir(previous)
        if expect is not None:
            assert result.exit_code == expect, (
                f"exit {result.exit_code}, expected {expect}\nstdout: {result.stdout}\nstderr: {result.stderr}"
                f"\n{result.exception!r}"
            )
        return result


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: compare before and after to prove nothing changed."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".patchwork.lock"
    }


# Runs the CLI in-process inside a fresh interpreter, then reports which heavy modules it imported.
PROBE = """
import json, sys
from patchwork_cli.cli.app import main
sys.argv = ["patchwork", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules, "pandas": "pandas" in sys.modules}),
      file=sys.stderr)
"""


def run(*args, cwd: Path, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """A real subprocess (two minutes at most), its output captured as text."""
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, input=input, env=env, timeout=120
    )


def probe(*args, cwd: Path) -> dict:
    """`patchwork *args` in a fresh interpreter: its exit code and whether it imported TensorFlow, pandas."""
    result = run(sys.executable, "-c", PROBE, *args, cwd=cwd)
    return json.loads(result.stderr.strip().splitlines()[-1])


# --- projects over real images, a tiny Keras extractor ----------------------------------------

IMSHAPE = (32, 32)


def tiny_keras_model(path: Path) -> Path:
    """A small deterministic conv net on 32x32 RGB, feature maps 16x16x64 (256-row chunks)."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((*IMSHAPE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    keras.Model(inputs, x).save(path)
    return path


def image_project(root: Path, count: int, model: Path, *, name: str = "proj", **settings) -> Path:
    """A project over `count` images in root/images (written unless there), its extractor `model`
    (extractor `settings` such as runtime= or pooling= on top)."""
    if not (root / "images").exists():
        write_images(root / "images", count)
    Cli(root)("init", name, "--images", "images", "--classes", "a,b")
    config_path = root / name / "patchwork.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["imshape"] = list(IMSHAPE)
    config["extractor"].update(name=str(model), batch_size=16, **settings)
    config_path.write_text(yaml.safe_dump(config))
    return root / name


def store(project: Path) -> zarr.Group:
    """The project's feature store, read-only."""
    return zarr.open_group(str(project / "features.zarr"), mode="r")


def assert_same_store(got: zarr.Group, expected: zarr.Group) -> None:
    """Two feature stores hold the same features, statuses, reasons and attributes."""
    for name in ("features", "status", "reason"):
        np.testing.assert_array_equal(got[name][:], expected[name][:], err_msg=name)
    assert dict(got.attrs) == dict(expected.attrs)


# --- projects over random features (extract --from-npy) ------------------------------------


def feature_project(
    root: Path,
    *,
    rows: int = 120,
    width: int = 16,
    labelled: int = 80,
    validation: int = 30,
    seed: int = 0,
    **training,
) -> tuple[Path, np.ndarray]:
    """A project `proj` whose features are random vectors; class a = feature 0 > 0, class b = feature 1 > 0.
    The first `labelled` rows are labelled, of which the last `validation` are validation rows; the head
    is mlp:16, trained briefly (`training` settings on top). Returns the project and every row's truth."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, width)).astype(np.float32)
    truth = (features[:, :2] > 0).astype(int)
    (root / "list.txt").write_text("\n".join(f"img/{i:05d}.png" for i in range(rows)))
    cli = Cli(root)
    cli("init", "proj", "--images", "list.txt", "--classes", "a,b")
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["model"]["head"] = "mlp:16"
    config["training"].update(
        {"epochs": 5, "batches_per_epoch": 20, "batch_size": 16, "learning_rate": 0.01, **training}
    )
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    np.save(project / "features.npy", features)
    cli("--project", "proj", "extract", "--from-npy", "proj/features.npy")
    edits = pd.DataFrame(
        {
            "filepath": [f"img/{i:05d}.png" for i in range(labelled)],
            "a": truth[:labelled, 0],
            "b": truth[:labelled, 1],
            "validation": [i >= labelled - validation for i in range(labelled)],
        }
    )
    edits.to_csv(root / "edits.csv", index=False)
    cli("--project", "proj", "label", "--import", "edits.csv")
    return project, truth


MULTICLASS_CLASSES = ["a", "b", "c"]


def multiclass_project(root: Path, *, rows: int = 150, labelled: int = 100, validation: int = 40) -> Path:
    """A multiclass project: features are random vectors and the class is the largest of features 0..2.
    The first `labelled` rows are labelled (the last `validation` of them for validation); every fourth
    training row says only what it is not (0 for one wrong class)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, 16)).astype(np.float32)
    truth = features[:, :3].argmax(axis=1)
    (root / "list.txt").write_text("\n".join(f"img/{i:05d}.png" for i in range(rows)))
    cli = Cli(root)
    cli("init", "proj", "--images", "list.txt", "--classes", ",".join(MULTICLASS_CLASSES), "--task", "multiclass")
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["model"]["head"] = "mlp:16"
    config["training"].update(epochs=5, batches_per_epoch=20, batch_size=16, learning_rate=0.01)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    np.save(project / "features.npy", features)
    cli("--project", "proj", "extract", "--from-npy", "proj/features.npy")
    cells = np.eye(3)[truth[:labelled]].astype(object)
    for i in range(0, labelled - validation, 4):
        cells[i] = [""] * 3
        cells[i][(truth[i] + 1) % 3] = 0
    edits = pd.DataFrame(cells, columns=MULTICLASS_CLASSES)
    edits.insert(0, "filepath", [f"img/{i:05d}.png" for i in range(labelled)])
    edits["validation"] = np.arange(labelled) >= labelled - validation
    edits.to_csv(root / "edits.csv", index=False)
    cli("--project", "proj", "label", "--import", "edits.csv")
    return project


CLUSTER_CLASSES = ["a", "b", "c"]


def cluster_project(root: Path, *, task: str = "multiclass", rows: int = 300, **model) -> tuple[Path, np.ndarray]:
    """Three clusters of non-negative 32-d vectors (like pooled ReLU features); 30 labels (10 a class,
    every fifth only a 0 for a wrong class), 60 validation rows, the rest unlabelled; `model` settings
    (e.g. head="labelprop") on top. Returns the project and every row's class."""
    rng = np.random.default_rng(0)
    truth = np.arange(rows) % 3
    centres = rng.uniform(0, 1, (3, 32)) * (rng.uniform(0, 1, (3, 32)) > 0.5)
    features = np.maximum(centres[truth] + rng.normal(0, 0.25, (rows, 32)), 0).astype(np.float32)
    (root / "list.txt").write_text("\n".join(f"img/{i:05d}.png" for i in range(rows)))
    cli = Cli(root)
    cli("init", "proj", "--images", "list.txt", "--classes", ",".join(CLUSTER_CLASSES), "--task", task)
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["model"].update(model)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    np.save(project / "features.npy", features)
    cli("--project", "proj", "extract", "--from-npy", "proj/features.npy")
    labelled = 90
    cells = np.eye(3)[truth[:labelled]].astype(object)
    for i in range(0, 30, 5):
        cells[i] = [""] * 3
        cells[i][(truth[i] + 1) % 3] = 0
    edits = pd.DataFrame(cells, columns=CLUSTER_CLASSES)
    edits.insert(0, "filepath", [f"img/{i:05d}.png" for i in range(labelled)])
    edits["validation"] = np.arange(labelled) >= 30
    edits.to_csv(root / "edits.csv", index=False)
    cli("--project", "proj", "label", "--import", "edits.csv")
    return project, truth


# --- a trained project over real images ------------------------------------------------------

TRAINED_CLASSES = ["a", "b"]


def trained_project(root: Path) -> Path:
    """A real project: 30 PNG images and one broken file, a small .keras extractor (avg-pooled,
    float16 store), 24 labelled rows (8 for validation), one training run."""
    import keras

    keras.utils.set_random_seed(11)
    inputs = keras.Input((*IMSHAPE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    keras.Model(inputs, x).save(root / "extractor.keras")
    write_images(root / "images", 30)
    (root / "images" / "broken.png").write_bytes(b"not a png")
    Cli(root)("init", "proj", "--images", "images", "--classes", ",".join(TRAINED_CLASSES))
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["imshape"] = list(IMSHAPE)
    config["extractor"].update(name="../extractor.keras", pooling="avg", batch_size=8)
    config["model"]["head"] = "mlp:16"
    config["training"].update(epochs=3, batches_per_epoch=10, batch_size=8, learning_rate=0.01)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(5)
    edits = pd.DataFrame(
        {
            "filepath": [f"images/img_{i:04d}.png" for i in range(24)],
            "a": rng.integers(0, 2, 24),
            "b": rng.integers(0, 2, 24),
            "validation": np.arange(24) >= 16,
        }
    )
    edits.to_csv(root / "edits.csv", index=False)
    Cli(project)("extract")
    Cli(root)("--project", "proj", "label", "--import", "edits.csv")
    Cli(project)("train")
    return project


def run_predictions(project: Path) -> np.ndarray:
    """The predictions of the project's latest run."""
    run = (project / "models" / "LATEST").read_text().strip()
    return zarr.open_array(str(project / "models" / run / "predictions.zarr"), mode="r")[:]


def copy_of_project(trained: Path, destination: Path) -> Path:
    """The trained project with its images and extractor copied under `destination` (no exports)."""
    shutil.copytree(trained.parent, destination / "copy", ignore=shutil.ignore_patterns("deploy"))
    return destination / "copy" / "proj"


# --- runs written by hand -----------------------------------------------------------------

SAMPLE_PREDICTIONS = np.array(
    [  # cat, dog, bird for the 12 images of the project_dir fixture
        [0.5, 0.1, 0.1],  # 0 max entropy 1
        [0.9, 0.9, 0.9],  # 1
        [0.3, 0.3, 0.3],  # 2 the largest sum
        [0.99, 0.01, 0.99],  # 3
        [0.1, 0.6, 0.1],  # 4
        [0.2, 0.2, 0.45],  # 5
        [0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1],
    ]
)


def write_run(project_dir, p, h=None, classes=None, run_id="20260101-000000-0001"):
    """Publish a run directory holding only what sampling reads: run.json, predictions, embeddings."""
    p = np.asarray(p, np.float32)
    h = np.zeros((len(p), 2), np.float32) if h is None else np.asarray(h, np.float32)
    staging = runs.staging_dir(project_dir, run_id)
    zarr.create_array(str(staging / runs.PREDICTIONS_NAME), data=p)
    zarr.create_array(str(staging / runs.EMBEDDINGS_NAME), data=h)
    runs.write_json(staging / runs.RUN_FILE, {"run_id": run_id, "classes": classes or ["cat", "dog", "bird"]})
    return runs.publish(project_dir, staging, run_id)
