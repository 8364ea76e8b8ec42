"""SIGKILL the label store's writers at random moments: nothing acknowledged is ever lost.

An edit is acknowledged when `Project.label` has returned (its journal line is fsynced), for
`label --import` when the command has exited 0, and in the labelling window when the key press
has been handled (the window shows only what the journal holds). After every kill the project must open cleanly
and hold exactly the acknowledged edits -- plus, at most, the one edit that was in flight.
"""

from __future__ import annotations

import collections
import random
import shutil
import time

import pandas as pd
import pytest
from builders import Cli, write_images

from patchwork_cli.store.journal import Journal
from patchwork_cli.store.project import Project
from reliability.builders import (
    LABEL_DRIVER,
    ForkServer,
    apply_to_model,
    image_list_project,
    random_edit,
    read_acks,
    report,
    table_matches,
)

pytestmark = pytest.mark.slow

KILLS = 40  # kill iterations per case
EDITS_PER_RUN = 60

IMPORT_CLI = """
from patchwork_cli.cli.app import app
app(["--project", ARGS["project"], "label", "--import", ARGS["csv"]], prog_name="patchwork")
"""

COMPACT = """
from patchwork_cli.store.project import Project
Project(ARGS["project"]).compact()
"""


def timed(forks, code, cwd, **args):
    started = time.monotonic()
    exit_code, log = forks.run(code, cwd, **args)
    assert exit_code == 0, log
    return time.monotonic() - started


def settle(table, model, rows, in_flight):
    """The model the table proves: the acknowledged edits alone, or with the in-flight edit."""
    if table_matches(table, model, rows):
        return model, "acknowledged edits only"
    with_in_flight = apply_to_model(model, in_flight)
    assert in_flight and table_matches(table, with_in_flight, rows), "an acknowledged edit was lost or garbled"
    return with_in_flight, "in-flight edit landed too"


def test_killed_labeller_keeps_every_acknowledged_edit(tmp_path, forks):
    rows = 2000
    directory = image_list_project(tmp_path, rows).directory
    rng = random.Random(1)
    run = {"project": str(directory), "compact_every": 20}
    edits = [random_edit(rng, range(rows)) for _ in range(EDITS_PER_RUN)]
    duration = timed(forks, LABEL_DRIVER, tmp_path, acks=str(tmp_path / "acks-full"), edits=edits, **run)
    model = apply_to_model({}, edits)
    assert table_matches(Project(directory).labels(), model, rows)

    outcomes = collections.Counter()
    for iteration in range(KILLS):
        edits = [random_edit(rng, range(rows)) for _ in range(EDITS_PER_RUN)]
        acks = tmp_path / f"acks-{iteration}"
        exit_code, log = forks.run(
            LABEL_DRIVER, tmp_path, kill_after=rng.uniform(0, duration), acks=str(acks), edits=edits, **run
        )
        acked = read_acks(acks)
        assert acked == [list(edit) for edit in edits[: len(acked)]] and "Traceback" not in log
        table = Project(directory).labels()  # the project opens cleanly
        model, outcome = settle(table, apply_to_model(model, edits[: len(acked)]), rows, edits[len(acked) :][:1])
        outcomes[outcome] += 1
        outcomes["killed" if exit_code == -9 else "finished first"] += 1
        outcomes["acknowledged edits"] += len(acked)
    assert outcomes["killed"] >= KILLS // 4  # the kills really land mid-work (timing on a busy machine varies)
    assert Cli(directory)("status").exit_code == 0
    report("label edits, SIGKILL", iterations=KILLS, **outcomes)


def write_import(path, edits, classes=("a", "b", "c")):
    columns = ["filepath", *classes, "exclude", "validation", "subset"]
    rows = [{c: "" for c in columns} | {"filepath": p} | {k: str(v) for k, v in f.items()} for p, f in edits]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)


def test_killed_label_import_is_all_or_nothing_until_acknowledged(tmp_path, forks):
    rows = 3000
    template = image_list_project(tmp_path, rows, name="template").directory
    rng = random.Random(2)
    earlier = [random_edit(rng, range(rows)) for _ in range(100)]
    Project(template).edit_labels(earlier)  # a journal the import's compaction must fold in
    imported = [random_edit(rng, range(rows), clearing=False) for _ in range(800)]
    write_import(tmp_path / "answers.csv", imported)
    old, new = apply_to_model({}, earlier), apply_to_model(apply_to_model({}, earlier), imported)
    directory = tmp_path / "proj"

    def fresh_copy():
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(template, directory)

    fresh_copy()
    duration = timed(forks, IMPORT_CLI, tmp_path, project=str(directory), csv="answers.csv")
    assert table_matches(Project(directory).labels(), new, rows)

    outcomes = collections.Counter()
    for _ in range(KILLS):
        fresh_copy()
        exit_code, log = forks.run(
            IMPORT_CLI, tmp_path, kill_after=rng.uniform(0, duration), project=str(directory), csv="answers.csv"
        )
        assert exit_code in (0, -9) and "Traceback" not in log
        table = Project(directory).labels()
        if table_matches(table, new, rows):
            outcomes["whole import"] += 1
        else:
            assert exit_code == -9, "the command returned but its import is not whole"
            # a kill inside the journal write may cut it short: only whole lines count
            landed = len(Journal(directory / "labels.journal").read()) - len(earlier)
            assert table_matches(table, apply_to_model(old, imported[:landed]), rows)
            outcomes["nothing" if landed == 0 else "a prefix of the edits (killed mid-write)"] += 1
        outcomes["killed" if exit_code == -9 else "finished first"] += 1
    assert outcomes["killed"] >= KILLS // 4  # the kills really land mid-work (timing on a busy machine varies)
    report("label --import, SIGKILL", iterations=KILLS, **outcomes)


def test_killed_compaction_leaves_old_or_new_labels_csv(tmp_path, forks):
    rows = 10000
    template = image_list_project(tmp_path, rows, name="template").directory
    rng = random.Random(3)
    edits = [random_edit(rng, range(rows)) for _ in range(400)]
    Project(template).edit_labels(edits)
    model = apply_to_model({}, edits)
    old_csv = (template / "labels.csv").read_bytes()
    directory = tmp_path / "proj"

    def fresh_copy():
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(template, directory)

    fresh_copy()
    duration = timed(forks, COMPACT, tmp_path, project=str(directory))
    new_csv = (directory / "labels.csv").read_bytes()
    assert new_csv != old_csv and (directory / "labels.journal").stat().st_size == 0

    outcomes = collections.Counter()
    for _ in range(KILLS):
        fresh_copy()
        exit_code, log = forks.run(COMPACT, tmp_path, kill_after=rng.uniform(0, duration), project=str(directory))
        assert "Traceback" not in log
        on_disk = (directory / "labels.csv").read_bytes()
        assert on_disk in (old_csv, new_csv), "labels.csv is neither the old nor the new complete file"
        journal_left = (directory / "labels.journal").stat().st_size > 0
        csv_state = "new" if on_disk == new_csv else "old"
        outcomes[f"{csv_state} labels.csv, journal {'kept' if journal_left else 'empty'}"] += 1
        assert table_matches(Project(directory).labels(), model, rows)  # replay gives the same labels
        Project(directory).compact()
        assert (directory / "labels.csv").read_bytes() == new_csv
        outcomes["killed" if exit_code == -9 else "finished first"] += 1
    assert outcomes["killed"] >= KILLS // 4  # the kills really land mid-work (timing on a busy machine varies)
    report("compaction, SIGKILL", iterations=KILLS, **outcomes)


def test_two_labellers_at_once_lose_nothing(tmp_path, forks):
    rows = 1000
    directory = image_list_project(tmp_path, rows).directory
    rng = random.Random(4)
    halves = (range(0, rows, 2), range(1, rows, 2))  # disjoint rows: each writer's result is exact
    model = {}
    outcomes = collections.Counter()
    rounds = 16
    for round_ in range(rounds):
        edits = [[random_edit(rng, half) for _ in range(EDITS_PER_RUN)] for half in halves]
        acks = [tmp_path / f"acks-{round_}-{w}" for w in (0, 1)]
        started = [
            forks.start(LABEL_DRIVER, tmp_path, project=str(directory), acks=str(a), edits=e, compact_every=10 + 5 * w)
            for w, (a, e) in enumerate(zip(acks, edits, strict=True))
        ]
        if round_ % 2:  # every other round, both are killed at random moments
            time.sleep(rng.uniform(0, 0.08))
            for pid, _ in started:
                time.sleep(rng.uniform(0, 0.02))
                forks.kill(pid)
        codes = [forks.reap(pid) if round_ % 2 else forks.finish(pid) for pid, _ in started]
        logs = [log.read_text() if log.exists() else "" for _, log in started]
        assert all(code in (0, -9) for code in codes) and not any("Traceback" in log for log in logs), logs
        table = Project(directory).labels()
        acked = [read_acks(a) for a in acks]
        for w in (0, 1):
            assert acked[w] == [list(edit) for edit in edits[w][: len(acked[w])]]
            if codes[w] == 0:
                assert len(acked[w]) == EDITS_PER_RUN
        model = apply_to_model(model, [e for w in (0, 1) for e in edits[w][: len(acked[w])]])
        in_flight = [e for w in (0, 1) for e in edits[w][len(acked[w]) :][:1]]
        candidates = [in_flight[:0], in_flight[:1], in_flight[1:], in_flight]
        matched = next((c for c in candidates if table_matches(table, apply_to_model(model, c), rows)), None)
        assert matched is not None, "an acknowledged edit of one of the two labellers was lost"
        model = apply_to_model(model, matched)
        outcomes["edits acknowledged"] += sum(map(len, acked))
        outcomes["rounds with kills" if round_ % 2 else "rounds run to the end"] += 1
    report("two labellers at once", rounds=rounds, **outcomes)


# The labelling windows on Agg, driven by synthetic key presses. After each key, what the window
# shows of every image of the session is acknowledged, with the images the next key can edit:
# those on screen (the image, or the grid's page) and those of the edit an undo would revert.
VIEWER_DRIVER = """
import json, os
import matplotlib.pyplot as plt
from matplotlib.backend_bases import KeyEvent
from patchwork_cli.labelling.grid_pages import GridPages
from patchwork_cli.labelling.session import LabelSession
from patchwork_cli.store.project import Project
from patchwork_cli.labelling.grid_window import GridWindow
from patchwork_cli.labelling.image_window import LabelWindow
session = LabelSession(Project(ARGS["project"]), ARGS["rows"])
grid = GridPages(session, tuple(ARGS["grid"]), "b") if ARGS["grid"] else None
window = GridWindow(grid, plt.figure()) if grid else LabelWindow(session, plt.figure())
canvas = window.figure.canvas
acks = os.open(ARGS["acks"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def in_reach():
    on_screen = grid.positions if grid else [session.position]
    undone = session.undo_stack[-1].earlier if session.undo_stack else {}
    return [session.images[p].filepath for p in [*on_screen, *undone]]
for key in ARGS["keys"]:
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))
    shown = {i.filepath: {**i.values, "exclude": i.exclude, "validation": i.validation} for i in session.images}
    os.write(acks, (json.dumps([in_reach(), shown]) + "\\n").encode())
"""
KEYS_PER_RUN = 40
VIEWER_KILLS = 8  # per window mode; each window draws every key on Agg: slower than a bare label call
VIEWER_MODES = {
    # mode: (task, grid shape or None, keys to choose from)
    "multilabel keys": ("multilabel", None, ["1", "2", "3", "n", "x", "v", "u", "right", "left", " ", "backspace"]),
    "multiclass one key, undo": ("multiclass", None, ["1", "2", "3", "1", "2", "3", "u", "ctrl+z", "x", "left"]),
    "grid pages, undo": ("multilabel", (2, 2), ["1", "2", "3", "4", "x", " ", " ", "u"]),
}


def stored_state(table, filepath: str) -> dict:
    row = table.loc[filepath]
    return {c: None if row[c] != row[c] else int(row[c]) for c in ("a", "b", "c")} | {
        flag: bool(row[flag]) for flag in ("exclude", "validation")
    }


@pytest.mark.parametrize("mode", VIEWER_MODES)
def test_killed_labelling_window_keeps_every_acknowledged_key(tmp_path, mode):
    task, grid, choices = VIEWER_MODES[mode]
    write_images(tmp_path / "img", 12)
    Cli(tmp_path)("init", "proj", "--images", "img", "--classes", "a,b,c", "--task", task)
    directory = tmp_path / "proj"
    first_screen = Project(directory).labels()["filepath"].tolist()[: grid[0] * grid[1] if grid else 1]
    forks = ForkServer(tmp_path, preload=("matplotlib.pyplot", "patchwork_cli.labelling.display"))
    rng = random.Random(7)
    run = {"project": str(directory), "rows": list(range(12)), "grid": grid}

    def keys():
        return [rng.choice(choices) for _ in range(KEYS_PER_RUN)] + ["q"]

    def full_run(name: str, keys: list[str]) -> float:
        return timed(forks, VIEWER_DRIVER, tmp_path, acks=str(tmp_path / f"acks-{name}"), keys=keys, **run)

    # the kills land while keys are pressed: after the window is up (a run of q alone), before the end
    opened = min(full_run("opened-0", ["q"]), full_run("opened-1", ["q"]))
    duration = min(full_run("full-0", keys()), full_run("full-1", keys()))  # warm runs: a cold one is slower
    outcomes = collections.Counter()
    for iteration in range(VIEWER_KILLS):
        acks = tmp_path / f"acks-{iteration}"
        kill_after = rng.uniform(opened, duration)
        exit_code, log = forks.run(VIEWER_DRIVER, tmp_path, kill_after=kill_after, acks=str(acks), keys=keys(), **run)
        assert "Traceback" not in log, log
        table = Project(directory).labels().set_index("filepath")  # the project opens cleanly
        acked = read_acks(acks)
        in_reach, shown = acked[-1] if acked else (first_screen, {})
        ahead = 0
        for filepath, fields in shown.items():
            if stored_state(table, filepath) != fields:  # only the images of the key in flight may be ahead
                assert exit_code == -9 and filepath in in_reach, (filepath, fields, stored_state(table, filepath))
                ahead += 1
        outcomes["in-flight key landed too" if ahead else "table as last shown"] += 1
        outcomes["killed" if exit_code == -9 else "finished first"] += 1
        outcomes["keys acknowledged"] += len(acked)
    forks.close()
    assert outcomes["killed"] >= VIEWER_KILLS // 4  # the kills really land mid-session
    report(f"labelling window, {mode} (Agg, synthetic keys), SIGKILL", iterations=VIEWER_KILLS, **outcomes)
