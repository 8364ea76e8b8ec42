"""The labelling window for real: `patchwork label` with TkAgg on an Xvfb display, keys typed
by xdotool through the X server, then labels.csv checked.

Without Xvfb, xdotool or tkinter the test skips, unless PATCHWORK_REQUIRE_XVFB=1 (which
.ci/run sets after installing them) turns the skip into a failure.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_images

PATCHWORK = Path(sys.executable).parent / "patchwork"
REQUIRED = os.environ.get("PATCHWORK_REQUIRE_XVFB") == "1"


def _missing() -> list[str]:
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    try:
        import tkinter  # noqa: F401
    except ImportError:
        missing.append("tkinter")
    return missing


@pytest.fixture
def display():
    """A fresh Xvfb server; yields its DISPLAY."""
    missing = _missing()
    if missing:
        reason = f"the real labelling window needs {', '.join(missing)}"
        if REQUIRED:
            pytest.fail(f"{reason} (PATCHWORK_REQUIRE_XVFB=1)")
        pytest.skip(reason)
    read_end, write_end = os.pipe()
    # -displayfd: the server picks a free display and writes its number once it accepts clients
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        assert ready, "Xvfb did not start within 30 s"
        number = os.read(read_end, 64).decode().strip()
        yield f":{number}"
    finally:
        os.close(read_end)
        server.terminate()
        server.wait(timeout=30)


def xdotool(*args: str, display: str) -> str:
    result = subprocess.run(
        ["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keys_typed_into_the_real_window_reach_labels_csv(display, tmp_path, cli):
    write_images(tmp_path / "images", 4)
    cli("init", "proj", "--images", "images", "--classes", "cat,dog,bird")
    project = tmp_path / "proj"
    env = {**os.environ, "DISPLAY": display, "MPLBACKEND": "TkAgg"}
    # the paths arrive on a pipe, as from `patchwork sample | patchwork label --paths -`
    session = subprocess.Popen(
        [PATCHWORK, "label", "--paths", "-"],
        cwd=project,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        session.stdin.write("../images/img_0000.png\n../images/img_0001.png\n../images/img_0002.png\n")
        session.stdin.close()
        window = xdotool("search", "--sync", "--onlyvisible", "--name", "patchwork label", display=display).split()[0]
        xdotool("windowfocus", "--sync", window, display=display)
        keys = ["1", "2", "2", "Right", "x", "space", "n", "h", "question", "Left", "BackSpace", "3", "q"]
        xdotool("key", "--delay", "60", *keys, display=display)
        session.wait(timeout=60)
        stdout, stderr = session.stdout.read(), session.stderr.read()
    finally:
        if session.poll() is None:
            session.kill()
    assert session.returncode == 0, stderr
    assert stdout == ""
    assert stderr == "6 label edit(s) on 3 image(s); labels.csv is up to date\n"
    table = pd.read_csv(project / "labels.csv", keep_default_na=False, dtype=str)
    assert table[["exclude", "cat", "dog", "bird"]].values.tolist() == [
        ["False", "1", "0", "1"],
        ["True", "", "", ""],
        ["False", "0", "0", "0"],
        ["False", "", "", ""],
    ]
    assert (project / "labels.journal").read_text() == ""  # quitting folded it into labels.csv
