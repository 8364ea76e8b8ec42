"""True subprocess runs: the installed entry points, what they import, and the built wheel."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import probe, run, write_images

ROOT = Path(__file__).resolve().parents[1]
PATCHWORK = Path(sys.executable).parent / "patchwork"


@pytest.mark.slow
def test_console_script_walkthrough(tmp_path):
    write_images(tmp_path / "images", 4)
    assert run(PATCHWORK, "init", "proj", "--images", "images", "--classes", "cat,dog", cwd=tmp_path).returncode == 0
    (tmp_path / "edits.csv").write_text("filepath,cat\n../images/img_0000.png,1\n../images/img_0001.png,0\n")
    result = run(PATCHWORK, "label", "--import", "../edits.csv", cwd=tmp_path / "proj")
    assert result.returncode == 0, result.stderr
    status = run(sys.executable, "-m", "patchwork_cli", "status", "--json", cwd=tmp_path / "proj")
    assert status.returncode == 0
    report = json.loads(status.stdout)
    assert report["classes"]["cat"]["train"] == {"positive": 1, "negative": 1}
    bad = run(PATCHWORK, "status", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error: not inside a patchwork project")
    assert bad.stdout == "" and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_light_commands_do_not_import_tensorflow(tmp_path):
    write_images(tmp_path / "images", 3)
    for args in (["init", "proj", "--images", "images", "--classes", "a"], ["--project", "proj", "status"]):
        report = probe(*args, cwd=tmp_path)
        assert report["code"] in (0, None) and not report["tensorflow"], (args, report)
    (tmp_path / "e.csv").write_text("filepath,a\nimages/img_0000.png,1\n")
    assert not probe("--project", "proj", "label", "--import", "e.csv", cwd=tmp_path)["tensorflow"]
    np.save(tmp_path / "f.npy", np.ones((3, 4), np.float32))
    report = probe("--project", "proj", "extract", "--from-npy", "f.npy", cwd=tmp_path)
    assert report["code"] in (0, None) and not report["tensorflow"]


def test_help_imports_neither_tensorflow_nor_pandas(tmp_path):
    report = probe("--help", cwd=tmp_path)
    assert report == {"code": 0, "tensorflow": False, "pandas": False}


@pytest.mark.slow
def test_the_built_wheel_carries_the_project_template(tmp_path):
    build = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        tmp_path / "dist",
        ROOT,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("patchwork_cli-*.whl")
    target = tmp_path / "site"
    install = run(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = run(sys.executable, "-c", "import patchwork_cli; print(patchwork_cli.__file__)", cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(target))
    write_images(tmp_path / "images", 2)
    init = run(
        sys.executable,
        "-m",
        "patchwork_cli",
        "init",
        "p",
        "--images",
        "images",
        "--classes",
        "x",
        cwd=tmp_path,
        env=env,
    )
    assert init.returncode == 0, init.stderr
    config = (tmp_path / "p" / "patchwork.yaml").read_text()
    assert "classes: [x]" in config and "# The fine-tuning head" in config
