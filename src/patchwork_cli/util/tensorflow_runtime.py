"""Starting TensorFlow quietly, for the code paths that need it (extract, train, export).

TensorFlow's C++ start-up writes notices (oneDNN, missing CUDA drivers, CPU features)
straight to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL, which would bury our own
messages. They are silenced for the import and the device discovery only; Python
errors raised meanwhile still propagate as usual.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow():
    """Import TensorFlow (once) without its start-up chatter; returns the module."""
    with native_stderr_silenced():
        import tensorflow

        tensorflow.config.list_physical_devices()
    return tensorflow
