"""Builders of projects and data for the tests: image files, the in-process CLI, projects over
images or random features, a trained project, hand-written runs, and the reliability tests'
fork server, random label edits and checks. Test modules import from here (tests/ is on sys.path
because tests/conftest.py is a rootdir conftest); fixtures stay in the conftest.py files.

Importing this module is cheap: TensorFlow and Keras are imported only inside the builders that
make a Keras model."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from PIL import Image
from typer.testing import CliRunner

from patchwork_cli.cli.app import app
from patchwork_cli.store import runs
from patchwork_cli.store.project import Project

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


def storage_project(root: Path, *, rows: int = 200) -> Path:
    """A project over `rows` listed image paths (no files), with edits.csv (every row a=1, b=0),
    more.txt (`rows` more paths) and features.npy (`rows` x 64) beside it, none of them applied."""
    (root / "list.txt").write_text("".join(f"img/{i}.png\n" for i in range(rows)))
    Cli(root)("init", "proj", "--images", "list.txt", "--classes", "a,b")
    (root / "edits.csv").write_text("filepath,a,b\n" + "".join(f"img/{i}.png,1,0\n" for i in range(rows)))
    (root / "more.txt").write_text("".join(f"more/{i}.png\n" for i in range(rows)))
    np.save(root / "features.npy", np.arange(rows * 64, dtype=np.float32).reshape(rows, 64))
    return root / "proj"


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


# --- reliability: a fork server for really-killed children -----------------------------------
#
# Killing a child that has to start Python and import pandas first would spend most of each
# iteration in start-up, so kill cases run through a *fork server*: one `python -c` process that
# has imported patchwork once and forks a fresh child per request. Each child is a real process,
# killed with a real SIGKILL at a random moment of its work; the server reaps it and reports how it
# ended (-9 when the kill landed, its exit code when it finished first).

FORK_SERVER = r"""
import importlib, json, os, sys, traceback
import patchwork_cli.cli.app, patchwork_cli.store.project  # once; every forked child starts warm
for module in sys.argv[1:]:
    importlib.import_module(module)
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "fork":
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.chdir(request["cwd"])
                exec(request["code"], {"__name__": "__child__", "ARGS": request["args"]})
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 70
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print(pid, flush=True)
    else:
        _, status = os.waitpid(request["pid"], 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
"""


class ForkServer:
    """Forks children that run a snippet of Python (with ARGS bound to a JSON-able dict)."""

    def __init__(self, log_dir: Path, preload: tuple[str, ...] = ()):
        self.log_dir = log_dir
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._reply() == "ready"
        self.count = 0

    def _reply(self) -> str:
        line = self.process.stdout.readline()
        assert line, "the fork server died"
        return line.strip()

    def _send(self, request: dict) -> str:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def start(self, code: str, cwd: Path, **args) -> tuple[int, Path]:
        """Fork a child running `code`; returns its pid and the file holding its stdout and stderr."""
        self.count += 1
        log = self.log_dir / f"child-{self.count}.log"
        pid = int(self._send({"op": "fork", "code": code, "cwd": str(cwd), "args": args, "log": str(log)}))
        return pid, log

    def reap(self, pid: int) -> int:
        """Wait for the child; its exit code, or -9 when SIGKILL ended it."""
        return int(self._send({"op": "reap", "pid": pid}))

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)  # a finished child is an unreaped zombie: the kill is harmless

    def finish(self, pid: int, timeout: float = 60) -> int:
        """Let the child run to its end (killed and failed after `timeout` s); its exit code."""
        _wait_for_exit(pid, timeout)
        return self.reap(pid)

    def run(self, code: str, cwd: Path, kill_after: float | None = None, **args) -> tuple[int, str]:
        """Run a child to its end, or SIGKILL it `kill_after` seconds in; (exit code, its output)."""
        pid, log = self.start(code, cwd, **args)
        if kill_after is None:
            exit_code = self.finish(pid)
        else:
            time.sleep(kill_after)
            self.kill(pid)
            exit_code = self.reap(pid)
        return exit_code, log.read_text(errors="replace") if log.exists() else ""

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=10)


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait until the (not our own) child `pid` is a zombie, killing it after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"child {pid} did not finish within {timeout} s")


# Appends edits one at a time, acknowledging each once `label` has returned, and compacts now and then.
LABEL_DRIVER = """
import json, os
from patchwork_cli.store.project import Project
project = Project(ARGS["project"])
acks = os.open(ARGS["acks"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for number, (path, fields) in enumerate(ARGS["edits"], start=1):
    project.label(path, **fields)
    os.write(acks, (json.dumps([path, fields]) + "\\n").encode())
    if number % ARGS["compact_every"] == 0:
        project.compact()
"""


# --- reliability: projects, random edits and the model they must match ------------------------

EDIT_CLASSES = ["a", "b", "c"]  # the classes of image_list_project, random_edit and table_matches


def image_list_project(root: Path, rows: int, name: str = "proj") -> Project:
    """A project over `rows` image paths (no files behind them: label store cases need none)."""
    from patchwork_cli.store.project import init_project

    return init_project(root / name, images=[f"img/{i:06d}.png" for i in range(rows)], classes=EDIT_CLASSES, cwd=root)[
        0
    ]


def random_edit(rng: random.Random, rows: range, clearing: bool = True) -> tuple[str, dict]:
    """One edit as `Project.label` takes it: the filepath of one of `rows` and 1-3 random fields.
    `clearing` False leaves out the values an import file cannot express (None, empty subset)."""
    row = rng.choice(rows)
    fields = {}
    for key in rng.sample([*EDIT_CLASSES, "exclude", "validation", "subset"], rng.randint(1, 3)):
        if key in EDIT_CLASSES:
            fields[key] = rng.choice([0, 1, None] if clearing else [0, 1])
        elif key == "subset":
            fields[key] = rng.choice(["day1", "day 2", 'ñ,"q"'] + ([""] if clearing else []))
        else:
            fields[key] = rng.random() < 0.5
    return f"../img/{row:06d}.png", fields


def apply_to_model(model: dict, edits) -> dict:
    """The expected labels: {filepath: {field: value}} after `edits`, last write wins."""
    model = {path: dict(fields) for path, fields in model.items()}
    for path, fields in edits:
        model.setdefault(path, {}).update(fields)
    return model


def table_matches(table, model: dict, rows: int, classes=EDIT_CLASSES) -> bool:
    """Whether the label table holds exactly the model's values (everything else unlabelled)."""
    expected = {c: np.full(rows, np.nan) for c in classes}
    flags = {"exclude": np.zeros(rows, bool), "validation": np.zeros(rows, bool)}
    subset = [""] * rows
    for path, fields in model.items():
        row = int(Path(path).stem)
        for key, value in fields.items():
            if key in classes:
                expected[key][row] = np.nan if value is None else value
            elif key == "subset":
                subset[row] = value or ""
            else:
                flags[key][row] = value
    return (
        len(table) == rows
        and all(np.array_equal(table[c].to_numpy(float), expected[c], equal_nan=True) for c in classes)
        and all(np.array_equal(table[k].to_numpy(bool), v) for k, v in flags.items())
        and table["subset"].tolist() == subset
    )


def read_acks(path: Path) -> list:
    """The complete lines of an ack file (a line cut short by the kill was never acknowledged)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1]]


def report(case: str, **counts) -> None:
    """One line per case on stdout (pytest -s shows it): the figures of the README table."""
    print(f"\n[reliability] {case}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def fill(directory: Path) -> Path:
    """Fill the file system holding `directory` to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler
