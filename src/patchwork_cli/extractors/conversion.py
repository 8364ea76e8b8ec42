"""Keras models to TFLite flatbuffers, the file every inference engine here runs.

The Keras model stays the source of truth: an engine's model is converted from it
(Keras -> SavedModel -> TFLite: Keras 3's TFLiteConverter.from_keras_model is broken,
from_saved_model is not), once, and kept in the user's cache beside the converted
extractor weights, named by what determines it (the weights' checksum, the image shape,
the channels and the pooling). Beside it lies the Keras output on a fixed check batch,
so every engine that opens the file can be checked against Keras without TensorFlow
having to run the Keras model again. LiteRT runs the file as it is; OpenVINO reads it
too, so one conversion serves both.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from patchwork_cli.errors import PatchworkError
from patchwork_cli.util.atomic import atomic_write, atomic_write_text

TFLITE_SUFFIX = ".tflite"
CHECK_IMAGES = 4


def check_batch(imshape: tuple[int, int], channels: int, dtype=np.float32) -> np.ndarray:
    """CHECK_IMAGES fixed images of `imshape` in 0..255: smooth random blobs rather than
    pixel noise, so the activations look like those of photographs (not saturated)."""
    rng = np.random.default_rng(20261201)
    images = []
    for _ in range(CHECK_IMAGES):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize(imshape[::-1], Image.BILINEAR))
        images.append(image[..., :1] if channels == 1 else image)
    return np.stack(images).astype(dtype)


def keras_to_tflite(model) -> bytes:
    """The TFLite flatbuffer of a Keras model (float32, the batch dimension left free)."""
    with tempfile.TemporaryDirectory(prefix="patchwork-savedmodel-") as saved:
        model.export(saved, verbose=False)
        return saved_model_to_tflite(saved)


def saved_model_to_tflite(saved_model_dir: str | Path) -> bytes:
    """The TFLite flatbuffer of a SavedModel directory (its serving signature)."""
    from patchwork_cli.util.tensorflow_runtime import native_stderr_silenced, start_tensorflow

    tf = start_tensorflow()
    try:
        with native_stderr_silenced():  # the converter logs a dozen lines of MLIR passes
            return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)).convert()
    except Exception as error:  # the converter raises ConverterError and others for unsupported ops
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise PatchworkError(
            f"the model cannot be converted to TFLite ({type(error).__name__}: {first_line})"
        ) from None


def cached_extractor_model(extractor) -> tuple[Path, np.ndarray]:
    """The TFLite file of `extractor` (an Extractor) and Keras' output on the check batch,
    converting and recording them on first use."""
    from patchwork_cli.extractors.efficientnet_lite0 import cache_directory

    key = {
        "name": extractor.name,
        "weights_sha256": extractor.weights_sha256,
        "imshape": list(extractor.imshape),
        "channels": extractor.channels,
        "pooling": extractor.pooling,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    directory = cache_directory() / "engines"
    model_path = directory / f"{digest}{TFLITE_SUFFIX}"
    reference_path = directory / f"{digest}.reference.npy"
    record_path = directory / f"{digest}.json"
    if model_path.is_file() and reference_path.is_file() and record_path.is_file():
        return model_path, np.load(reference_path)
    directory.mkdir(parents=True, exist_ok=True)
    reference = np.asarray(extractor.model.predict_on_batch(check_batch(extractor.imshape, extractor.channels)))
    try:
        flatbuffer = keras_to_tflite(extractor.model)
    except PatchworkError as error:
        raise PatchworkError(
            f"{extractor.name}: {error}, so no inference engine can run it; set extractor.runtime: keras"
        ) from None
    # The record last: the three files exist together or the conversion runs again.
    with atomic_write(model_path, "wb", encoding=None) as handle:
        handle.write(flatbuffer)
    with atomic_write(reference_path, "wb", encoding=None) as handle:
        np.save(handle, reference)
    atomic_write_text(record_path, json.dumps({**key, "tflite_sha256": hashlib.sha256(flatbuffer).hexdigest()}))
    return model_path, reference
