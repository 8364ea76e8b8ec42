"""Where image paths come from: a text file of paths, a directory tree, or stdin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from patchwork_cli.errors import PatchworkError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def read_image_source(source: str, stdin=None) -> list[str]:
    """Image paths, in order, from `source`.

    `source` is `-` (one path per line on stdin), a directory (scanned recursively for
    image files, sorted), or a text file with one path per line (see read_path_list).
    """
    if source != "-" and Path(source).is_dir():
        return scan_directory(Path(source))
    return [path for _, path in read_path_list(source, stdin, hint="give a text file, a directory or - for stdin")]


def read_path_list(source: str, stdin=None, hint: str = "") -> list[tuple[int, str]]:
    """(line number, path) of each path listed in `source`: a text file, or `-` for stdin.

    Blank lines and lines starting with `#` are skipped and surrounding whitespace is
    dropped. Something that is not a text list is an error naming `source`; `hint` says
    what else the caller would have taken.
    """
    if source == "-":
        return _parse_list((stdin or sys.stdin).read(), "<stdin>")
    try:
        text = Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PatchworkError(f"{source}: no such file or directory") from None
    except UnicodeDecodeError as error:
        reason = f"{source}: not a text list of image paths (not UTF-8 at byte {error.start})"
        raise PatchworkError(f"{reason}; {hint}" if hint else reason) from None
    return _parse_list(text, source)


def scan_directory(directory: Path) -> list[str]:
    """Every image file under `directory`, as paths starting with `directory`, sorted."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)


def scan_class_folders(folder: Path) -> dict[str, list[str]]:
    """{class: its image paths} of a folder holding one sub-directory per class (the layout of
    Keras' image_dataset_from_directory), classes sorted by name, each scanned recursively.

    Images directly in `folder` belong to no class: they are refused rather than left out
    unseen, as is a folder without sub-directories.
    """
    if not folder.is_dir():
        raise PatchworkError(f"{folder}: not a directory; --classes-from-folders needs a folder of class folders")
    entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    loose = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)]
    if loose:
        raise PatchworkError(
            f"{folder / loose[0]}: an image outside the class sub-directories ({len(loose)} such); "
            "move each into the folder of its class"
        )
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not classes:
        raise PatchworkError(
            f"{folder}: no class sub-directories; --classes-from-folders expects {folder}/<class>/<images>"
        )
    return {name: scan_directory(folder / name) for name in classes}


def _parse_list(text: str, source: str) -> list[tuple[int, str]]:
    if "\0" in text:
        raise PatchworkError(f"{source}: not a text list of image paths (it contains NUL bytes)")
    numbered = ((number, line.strip()) for number, line in enumerate(text.splitlines(), start=1))
    return [(number, path) for number, path in numbered if path and not path.startswith("#")]
