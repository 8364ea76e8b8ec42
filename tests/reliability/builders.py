"""Builders for the reliability tests alone: projects for the storage faults, the fork server
for really-killed children, random label edits and the model they must match, the checks, and
the one-line tally per case the README table quotes. The builders every test file uses are in
tests/builders.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from builders import Cli

from patchwork_cli.store.project import Project


def storage_project(root: Path, *, rows: int = 200) -> Path:
    """A project over `rows` listed image paths (no files), with edits.csv (every row a=1, b=0),
    more.txt (`rows` more paths) and features.npy (`rows` x 64) beside it, none of them applied."""
    (root / "list.txt").write_text("".join(f"img/{i}.png\n" for i in range(rows)))
    Cli(root)("init", "proj", "--images", "list.txt", "--classes", "a,b")
    (root / "edits.csv").write_text("filepath,a,b\n" + "".join(f"img/{i}.png,1,0\n" for i in range(rows)))
    (root / "more.txt").write_text("".join(f"more/{i}.png\n" for i in range(rows)))
    np.save(root / "features.npy", np.arange(rows * 64, dtype=np.float32).reshape(rows, 64))
    return root / "proj"


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
