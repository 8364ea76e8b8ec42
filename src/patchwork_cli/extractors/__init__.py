"""Pretrained feature extractors: networks that turn image pixels into feature maps.

Importing this package starts TensorFlow. Its C++ start-up writes notices (oneDNN,
missing CUDA drivers) straight to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL,
which would bury our own messages; they are silenced for the import and the device
discovery only. Python errors raised meanwhile still propagate as usual.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import tensorflow

    tensorflow.config.list_physical_devices()
