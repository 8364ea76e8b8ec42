"""Crash-safe file replacement: write a temporary file beside the target, fsync, os.replace.

A reader (or a process that crashes half-way) sees either the old complete file or
the new complete file, never a partial one.
"""

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None):
    """Yield a file object; on clean exit its content replaces `path` atomically."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode the file had, or a new file's.
        os.fchmod(fd, _mode_for(path))
        if "b" in mode:
            handle = os.fdopen(fd, mode)
        else:
            handle = os.fdopen(fd, mode, encoding=encoding, newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.filename is None:  # a write or fsync: say which file failed
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    fsync_directory(path.parent)


def _mode_for(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def atomic_keras_save(save: Callable[[Path], None], path: Path) -> None:
    """`save(temporary path)` (a Keras model.save or save_weights), then the file moved over
    `path` in one rename. The temporary file lives in a directory beside `path` under `path`'s
    own name, because Keras insists on the suffix (.keras, .weights.h5)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp_dir:
        temporary = Path(tmp_dir) / path.name
        with warnings.catch_warnings():
            # Keras' TF backend converts each variable with np.array(copy=False), which numpy 2
            # answers with a DeprecationWarning per variable (keras-team/keras#21288): noise only.
            warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
            save(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    fsync_directory(path.parent)
