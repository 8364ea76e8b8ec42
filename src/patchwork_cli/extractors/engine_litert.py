"""The LiteRT engine (ai-edge-litert, TensorFlow Lite's runtime, with XNNPACK): runs a .tflite file,
the extractor's Keras model converted once and cached (conversion.py), as phones run it. Exact
(float32) features only."""

from __future__ import annotations

import numpy as np

from patchwork_cli.extractors.conversion import TFLITE_SUFFIX, cached_extractor_model

NAME = "litert"
PACKAGE = ("ai_edge_litert", "ai-edge-litert")  # (the module it imports, the pip package)
FILE = TFLITE_SUFFIX  # the suffix of the file it runs


def artefact(extractor) -> tuple[str, np.ndarray]:
    """The .tflite file of `extractor` (extractors.loading.Extractor) and Keras' outputs on the
    check batch, which the engine is checked against when it opens."""
    path, reference = cached_extractor_model(extractor)
    return str(path), reference


def load(path: str, precision: str, batch_size: int, threads: int):
    """(run_batch, input dtype): the .tflite file at `path` on `threads` threads, compiled for
    batches of `batch_size` rows. `precision` is always exact here."""
    from ai_edge_litert.interpreter import Interpreter

    from patchwork_cli.util.tensorflow_runtime import native_stderr_silenced

    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." as it applies the
    # delegate, which happens again when the tensors are resized and allocated
    with native_stderr_silenced():
        interpreter = Interpreter(model_path=path, num_threads=threads)
        (source,) = interpreter.get_input_details()
        target = interpreter.get_output_details()[0]["index"]
        interpreter.resize_tensor_input(source["index"], (batch_size, *source["shape"][1:]), strict=False)
        interpreter.allocate_tensors()

    def run(batch: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()  # releases the GIL: decoding threads go on meanwhile
        return interpreter.get_tensor(target)  # a copy: the next invoke does not change it

    return run, np.dtype(source["dtype"])
