"""The project lock: an flock on `.patchwork.lock` in the project directory.

Shared holders (label appenders, readers of labels.csv + journal) run side by side;
an exclusive holder (compaction, add, class changes) waits for them and keeps them
out, so nobody appends to a journal that is being folded and truncated, and nobody
reads a labels.csv that no longer matches the journal beside it.
"""

import contextlib
import fcntl
import os
from pathlib import Path

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
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
