"""Everything at once, repeated: a labeller, `add`, `sample`, a reader and a real `train`, all on one
project. No acknowledged edit is lost, nothing crashes, and no reader ever sees a torn file."""

from __future__ import annotations

import collections
import random
import subprocess
import sys

import pytest
from builders import Cli, feature_project

from patchwork_cli.store import runs
from patchwork_cli.store.project import Project
from reliability.builders import LABEL_DRIVER, apply_to_model, read_acks, report, table_matches

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

ROUNDS = 2  # each round lasts one real `train` (TensorFlow start-up included)
ROWS = 300

# Adds a batch of new images now and then until told to stop; prints what it added.
ADDER = """
import os, time
from patchwork_cli.store.project import Project
batch = 0
while not os.path.exists(ARGS["stop"]):
    paths = [f"new/{ARGS['round']}-{batch}-{i}.png" for i in range(10)]
    Project(ARGS["project"]).add_images(paths, cwd=ARGS["project"])
    print(*paths, sep="\\n", flush=True)
    batch += 1
    time.sleep(0.3)
"""

# Reads the table every way there is, checking that it only ever grows and never tears.
READER = """
import os, time
from patchwork_cli.store import runs
from patchwork_cli.store.label_table import read_label_table
from patchwork_cli.store.project import Project
from patchwork_cli.cli.app import app
project, seen, reads = Project(ARGS["project"]), [], 0
while not os.path.exists(ARGS["stop"]):
    paths = project.labels()["filepath"].tolist()
    assert paths[: len(seen)] == seen, "rows changed under a reader"
    seen = paths
    raw = read_label_table(project.store.csv_path, project.classes)["filepath"].tolist()  # no lock: always whole
    shorter, longer = sorted((raw, paths), key=len)  # an add may have landed in between
    assert longer[: len(shorter)] == shorter
    latest = runs.latest_run(project.directory)
    assert latest is not None and (runs.models_dir(project.directory) / latest / runs.RUN_FILE).is_file()
    reads += 1
    time.sleep(0.02)
    if reads % 10 == 0:
        try:
            app(["--project", ARGS["project"], "status", "--json"], prog_name="patchwork")
        except SystemExit as stop:
            assert stop.code in (0, None), stop.code
print("reads", reads)
"""

SAMPLER = """
import os, time
from patchwork_cli.cli.app import app
samples = 0
while not os.path.exists(ARGS["stop"]):
    strategy = ("random", "maxent", "badge")[samples % 3]
    try:
        app(["--project", ARGS["project"], "sample", "-n", "5", "--strategy", strategy], prog_name="patchwork")
    except SystemExit as stop:
        assert stop.code in (0, None), stop.code
    samples += 1
    time.sleep(0.1)
print("samples", samples)
"""


def test_label_add_sample_read_and_train_at_once(tmp_path, forks):
    project, _ = feature_project(
        tmp_path, rows=ROWS, labelled=200, validation=50, epochs=4, batches_per_epoch=10, learning_rate=0.001
    )
    Cli(project)("train")  # sample's maxent and badge need a model from the start
    rng = random.Random(9)
    base = Project(project).labels()
    model = {  # the labels the project starts with, in the model's form
        path: {"a": _cell(a), "b": _cell(b), "validation": bool(validation)}
        for path, a, b, validation in zip(base["filepath"], base["a"], base["b"], base["validation"], strict=True)
    }
    added_all, outcomes = [], collections.Counter()
    for round_ in range(ROUNDS):
        stop = tmp_path / f"stop-{round_}"
        args = {"project": str(project), "stop": str(stop)}
        edits = [(f"../img/{rng.randrange(ROWS):05d}.png", _fields(rng)) for _ in range(150)]
        acks = tmp_path / f"acks-{round_}"
        labeller = forks.start(
            LABEL_DRIVER, tmp_path, project=str(project), acks=str(acks), edits=edits, compact_every=25
        )
        others = {name: forks.start(code, tmp_path, round=round_, **args) for name, code in
                  (("adder", ADDER), ("reader", READER), ("sampler", SAMPLER))}  # fmt: skip
        train = subprocess.run(
            [sys.executable, "-m", "patchwork_cli", "train"], cwd=project, capture_output=True, text=True, timeout=300
        )
        stop.touch()
        codes = {"labeller": forks.finish(labeller[0])} | {name: forks.finish(pid) for name, (pid, _) in others.items()}
        logs = {name: log.read_text() for name, (_, log) in [("labeller", labeller), *others.items()]}
        assert train.returncode == 0 and "Traceback" not in train.stderr, train.stderr
        assert all(code == 0 for code in codes.values()), (codes, logs)
        assert not any("Traceback" in log for log in logs.values()), logs
        added = [line for line in logs["adder"].splitlines() if line.startswith("new/")]
        added_all += added
        table = Project(project).labels()
        assert table["filepath"].tolist()[ROWS:] == added_all
        assert len(read_acks(acks)) == len(edits)
        model = apply_to_model(model, edits)
        assert table_matches(table.iloc[:ROWS].reset_index(drop=True), model, ROWS, classes=["a", "b"])
        latest = runs.latest_run(project)
        assert (runs.models_dir(project) / latest / runs.PREDICTIONS_NAME).exists()
        outcomes["edits acknowledged and kept"] += len(edits)
        outcomes["images added"] += len(added)
        outcomes["reads"] += int(logs["reader"].split("reads ")[-1])
        outcomes["samples"] += int(logs["sampler"].split("samples ")[-1])
        outcomes["trains"] += 1
    report("everything at once", rounds=ROUNDS, **outcomes)


def _fields(rng: random.Random) -> dict:
    return {"a": rng.choice([0, 1, None])} if rng.random() < 0.5 else {"b": rng.choice([0, 1]), "exclude": False}


def _cell(value: float) -> int | None:
    return None if value != value else int(value)
