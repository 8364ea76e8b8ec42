"""How image paths are written in labels.csv, and how they are read back: the one home of the rule.

labels.csv keeps absolute paths as they are and relative paths relative to the project
directory, so a project directory moved together with its images keeps working. Every other
place a path is shown or written (sample's output, export's CSVs) is relative to where the
reader stands: the current directory, or the export directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def stored_paths(paths: Iterable[str], directory: Path, cwd: Path | str | None = None) -> list[str]:
    """The form paths take in labels.csv: absolute paths stay absolute; relative ones
    (relative to `cwd`) become relative to the project `directory`."""
    prefix = os.path.relpath(os.path.abspath(cwd or os.getcwd()), directory)
    return [os.path.normpath(p if os.path.isabs(p) else os.path.join(prefix, p)) for p in paths]


def absolute_path(directory: Path, stored: str) -> str:
    """The file a stored path names, to open it."""
    return os.path.join(directory, stored)


def locations(directory: Path, stored: Iterable[str]) -> list[str]:
    """Where stored paths point, as normalised absolute paths: the identity of an image,
    whichever way (relative or absolute) its path was written."""
    return [os.path.normpath(absolute_path(directory, p)) for p in stored]


def relative_to(stored: Iterable[str], directory: Path, base: Path | str | None = None) -> list[str]:
    """Stored paths as seen from `base` (the current directory by default): absolute paths as they
    are, relative ones (relative to the project `directory`) made relative to `base`."""
    start = os.path.abspath(base if base is not None else os.getcwd())
    return [p if os.path.isabs(p) else os.path.relpath(absolute_path(directory, p), start) for p in stored]
