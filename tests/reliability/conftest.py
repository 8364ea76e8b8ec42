"""Fault-injection fixtures: a fork server for fast, really-killed children (ForkServer, in
reliability/builders.py, with the random label edits and the tally the README table quotes), and
mounts for a read-only and a full file system."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reliability.builders import ForkServer


@pytest.fixture
def forks(tmp_path):
    server = ForkServer(tmp_path)
    yield server
    server.close()


# --- file systems ------------------------------------------------------------------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted at tmp_path/disk (skipped where mounting is not permitted)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)):
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs); the full-disk case cannot run here")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@pytest.fixture
def read_only(tmp_path):
    """A function making a directory read-only by a read-only bind mount of itself (root can
    write through chmod, not through a read-only mount); unmounted afterwards."""
    mounted = []

    def make_read_only(directory: Path) -> None:
        if os.geteuid() != 0 or not _mount("--bind", str(directory), str(directory)):
            pytest.skip("a read-only bind mount needs root; the read-only project case cannot run here")
        mounted.append(directory)
        if not _mount("-o", "remount,bind,ro", str(directory)):
            pytest.skip("remounting a bind mount read-only is not permitted here")

    yield make_read_only
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], check=True)


def copy_project(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target
