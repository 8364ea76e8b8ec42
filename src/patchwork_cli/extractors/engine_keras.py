"""The Keras engine: TensorFlow runs the extractor's Keras model itself, as loaded (no file of its
own, and nothing to check it against: it is the reference every other engine is checked against).

Each batch is cut into one part per core and the parts run at once. TensorFlow's intra-op pool
waits for its slowest thread at every layer, and a decoding thread on the same core makes one slow:
one call on every core ran extract at 0.81 of the stages' bound. Parts run at once fill each other's
waits. Measured on 2 cores (AMD EPYC, extract_bench's JPEGs, 768 images decoded alongside, three
interleaved rounds in one process): 182, 187 and 190 img/s against 162, 174 and 166 for one
predict_on_batch call a batch decoding in turns (its best before), with outputs bit for bit the same
on the bundled extractor. Each part has a fixed size, so a row's output still does not depend on its
batch companions.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np

NAME = "keras"
PACKAGE = None  # (module, pip package) to install: none, TensorFlow comes with patchwork
FILE = None  # the suffix of the file it runs: none, it runs the Keras model in memory


def artefact(extractor) -> tuple[object, None]:
    """What runs `extractor` (extractors.loading.Extractor) here: its Keras model; and no
    reference outputs to check the engine against (Keras is the reference)."""
    return extractor.model, None


def load(model, precision: str, batch_size: int, threads: int):
    """(run_batch, input dtype): `model` on Keras for batches of `batch_size` float32 rows, in
    min(`threads`, `batch_size`) parts at once. `precision` is always exact here."""
    import tensorflow as tf  # started by whoever built `model`

    call = tf.function(lambda part: model(part, training=False))
    parts = min(threads, batch_size)
    pool = concurrent.futures.ThreadPoolExecutor(parts, thread_name_prefix="patchwork-keras")

    def run(batch: np.ndarray) -> np.ndarray:
        return np.concatenate(list(pool.map(lambda part: call(part).numpy(), np.array_split(batch, parts))))

    return run, np.dtype(np.float32)
