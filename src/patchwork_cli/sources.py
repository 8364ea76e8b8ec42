"""Where image paths come from: a text file of paths, a directory tree, or stdin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import PatchworkError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def read_image_source(source: str, stdin=None) -> list[str]:
    """Image paths, in order, from `source`.

    `source` is `-` (one path per line on stdin), a directory (scanned recursively for
    image files, sorted), or a text file with one path per line. In lists, blank lines
    and lines starting with `#` are skipped and surrounding whitespace is dropped.
    """
    if source == "-":
        return _parse_list((stdin or sys.stdin).read(), "<stdin>")
    path = Path(source)
    if path.is_dir():
        return scan_directory(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PatchworkError(f"{source}: no such file or directory") from None
    except UnicodeDecodeError as error:
        raise PatchworkError(
            f"{source}: not a text list of image paths (not UTF-8 at byte {error.start}); "
            "give a text file, a directory or - for stdin"
        ) from None
    return _parse_list(text, source)


def scan_directory(directory: Path) -> list[str]:
    """Every image file under `directory`, as paths starting with `directory`, sorted."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)


def _parse_list(text: str, source: str) -> list[str]:
    if "\0" in text:
        raise PatchworkError(f"{source}: not a text list of image paths (it contains NUL bytes)")
    paths = (line.strip() for line in text.splitlines())
    return [p for p in paths if p and not p.startswith("#")]
