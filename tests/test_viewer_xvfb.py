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
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import write_images
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.xvfb]

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
    # the paths arrive on a pipe, as from `patchwork sample | patchwork label --paths -`
    session = start_label(project, display, paths=[f"../images/img_{i:04d}.png" for i in range(3)])
    try:
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


def write_photos(directory: Path) -> list[str]:
    """Real photographs (scikit-image's), three of them of Chelsea the cat; returns their names in order."""
    from skimage import data

    directory.mkdir()
    cat = data.chelsea()
    photos = {
        "coffee.jpg": data.coffee(),
        "astronaut.jpg": data.astronaut(),
        "rocket.jpg": data.rocket(),
        "camera.png": data.camera(),
        "cat_a.jpg": cat,
        "coins.png": data.coins(),
        "colorwheel.png": data.colorwheel(),
        "cat_b.jpg": cat[:, ::-1],
        "moon.png": data.moon(),
        "clock.png": data.clock(),
        "cat_c.jpg": cat[40:, 60:400],
        "immunohistochemistry.jpg": data.immunohistochemistry(),
    }
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(directory / name, quality=92)
    return list(photos)


def start_label(project: Path, display: str, *args: str, paths: list[str]) -> subprocess.Popen:
    """`patchwork label ARGS --paths -` in a TkAgg window on `display`, `paths` (as seen from the
    project directory) written to its stdin."""
    env = {**os.environ, "DISPLAY": display, "MPLBACKEND": "TkAgg"}
    session = subprocess.Popen(
        [PATCHWORK, "label", *args, "--paths", "-"],
        cwd=project,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    session.stdin.write("".join(f"{path}\n" for path in paths))
    session.stdin.close()
    return session


def focused_window(display: str) -> str:
    window = xdotool("search", "--sync", "--onlyvisible", "--name", "patchwork label", display=display).split()[0]
    xdotool("windowfocus", "--sync", window, display=display)
    return window


def screenshot(window: str, display: str) -> Image.Image:
    """The window as the X server shows it."""
    from PIL import ImageGrab

    time.sleep(1.5)  # the keys' redraws reach the screen
    geometry = dict(
        line.strip().split("=") for line in xdotool("getwindowgeometry", "--shell", window, display=display).split()
    )
    left, top, width, height = (int(geometry[key]) for key in ("X", "Y", "WIDTH", "HEIGHT"))
    return ImageGrab.grab(bbox=(left, top, left + width, top + height), xdisplay=display)


def keep_screenshot(picture: Image.Image, name: str) -> None:
    """PATCHWORK_SCREENSHOTS=DIR keeps the test's screenshots (docs/ holds the README's)."""
    directory = os.environ.get("PATCHWORK_SCREENSHOTS")
    if directory:
        picture.save(Path(directory) / name)


def finish(session: subprocess.Popen) -> str:
    try:
        session.wait(timeout=60)
    finally:
        if session.poll() is None:
            session.kill()
    stderr = session.stderr.read()
    assert session.returncode == 0, stderr
    return stderr


def test_one_key_undo_and_a_grid_page_in_the_real_window(display, tmp_path, cli):
    names = write_photos(tmp_path / "photos")
    cli("init", "pets", "--images", "photos", "--task", "multiclass", "--classes", "cat,coffee,other")
    project = tmp_path / "pets"

    # one key per image: coffee; astronaut as a cat (a slip), undone, then other; q
    session = start_label(project, display, paths=[f"../photos/{name}" for name in names[:3]])
    window = focused_window(display)
    xdotool("key", "--delay", "150", "2", "1", "u", display=display)
    single = screenshot(window, display)
    xdotool("key", "--delay", "150", "3", "q", display=display)
    assert finish(session) == "4 label edit(s) on 3 image(s); labels.csv is up to date\n"
    keep_screenshot(single, "label_window.png")

    # a grid page of nine for cat: the three cats marked by their keys, the clock excluded, space, q
    session = start_label(
        project, display, "--grid", "3x3", "--class", "cat", paths=[f"../photos/{n}" for n in names[3:]]
    )
    window = focused_window(display)
    xdotool("key", "--delay", "150", "2", "5", "8", "x", "7", display=display)
    grid = screenshot(window, display)
    xdotool("key", "--delay", "150", "space", "q", display=display)
    assert finish(session) == "9 label edit(s) on 9 image(s); labels.csv is up to date\n"
    keep_screenshot(grid, "label_grid.png")

    table = pd.read_csv(project / "labels.csv", keep_default_na=False, dtype=str).set_index("filepath")
    cells = {name: table.loc[f"../photos/{name}", ["exclude", "cat", "coffee", "other"]].tolist() for name in names}
    assert cells == {
        "coffee.jpg": ["False", "0", "1", "0"],
        "astronaut.jpg": ["False", "0", "0", "1"],
        "rocket.jpg": ["False", "", "", ""],
        "camera.png": ["False", "0", "", ""],
        "cat_a.jpg": ["False", "1", "0", "0"],
        "coins.png": ["False", "0", "", ""],
        "colorwheel.png": ["False", "0", "", ""],
        "cat_b.jpg": ["False", "1", "0", "0"],
        "moon.png": ["False", "0", "", ""],
        "clock.png": ["True", "", "", ""],
        "cat_c.jpg": ["False", "1", "0", "0"],
        "immunohistochemistry.jpg": ["False", "0", "", ""],
    }
    # the windows painted their pictures: no blank screenshot
    for picture in (single, grid):
        assert picture.size[0] >= 1000 and len(np.unique(np.asarray(picture.convert("L")))) > 50
