"""Shared fixtures: real image files, a CLI runner, and a ready project."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from patchwork_cli.cli.app import app

CLASSES = ["cat", "dog", "bird"]


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


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def images(tmp_path) -> list[Path]:
    return write_images(tmp_path / "images", 12)


@pytest.fixture
def project_dir(tmp_path, cli, images) -> Path:
    """A project `proj` over 12 images in tmp_path/images, classes cat, dog, bird."""
    cli("init", "proj", "--images", "images", "--classes", ",".join(CLASSES))
    return tmp_path / "proj"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: compare before and after to prove nothing changed."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".patchwork.lock"
    }


class Clock:
    """A clock the test moves by hand, for the seconds each edit records."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
