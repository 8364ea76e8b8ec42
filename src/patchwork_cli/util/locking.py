"""The locks: flocks on lock files, released when their descriptor closes (a killed holder too).

The project lock is `.patchwork.lock` in the project directory. Shared holders (label
appenders, readers of labels.csv + journal) run side by side; an exclusive holder (compaction,
add, class changes) waits for them and keeps them out, so nobody appends to a journal that is
being folded and truncated, and nobody reads a labels.csv that no longer matches the journal
beside it.

A sole holder (`sole_holder`, e.g. the one process that may work in a pretrain directory) does
not wait: a second one is refused while the first runs.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from patchwork_cli.errors import PatchworkError

LOCK_NAME = ".patchwork.lock"


@contextlib.contextmanager
def project_lock(project_dir: Path, exclusive: bool):
    """Hold the project lock for the duration of the block.

    Not re-entrant: code holding the lock must not ask for it again. A project on
    read-only storage has nothing to protect against writers, so readers go on unlocked.
    """
    path = Path(project_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if exclusive:
            raise
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    with _holding(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def sole_holder(path: Path, refusal: str):
    """Hold an exclusive lock on the file `path` (created if need be) for the duration of the
    block, without waiting: while another process holds it, PatchworkError(refusal)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with _holding(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, refusal):
        yield


@contextlib.contextmanager
def _holding(fd: int, operation: int, refusal: str | None = None):
    """flock the open descriptor `fd` for the block (`refusal`: the error when a non-blocking
    `operation` finds the lock taken); closing it, always, releases the lock."""
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            raise PatchworkError(refusal) from None
        yield
    finally:
        os.close(fd)
