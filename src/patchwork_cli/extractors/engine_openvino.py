"""The OpenVINO engine: runs a .tflite file (OpenVINO reads the same file LiteRT runs, so one
conversion, conversion.py, serves both), in float32 for exact features or in bfloat16 for fast
ones on CPUs that have it (AVX512-BF16 or AMX)."""

from __future__ import annotations

import numpy as np

from patchwork_cli.extractors.conversion import TFLITE_SUFFIX, cached_extractor_model

NAME = "openvino"
PACKAGE = ("openvino", "openvino")  # (the module it imports, the pip package)
FILE = TFLITE_SUFFIX  # the suffix of the file it runs
FAST = "fast:openvino-bf16"  # the precision of its bfloat16 features, as a store of them records it


def artefact(extractor) -> tuple[str, np.ndarray]:
    """The .tflite file of `extractor` (extractors.loading.Extractor) and Keras' outputs on the
    check batch, which the engine is checked against when it opens."""
    path, reference = cached_extractor_model(extractor)
    return str(path), reference


def has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 (what precision fast needs)."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def load(path: str, precision: str, batch_size: int, threads: int):
    """(run_batch, input dtype): the .tflite file at `path` on `threads` threads, compiled for
    batches of `batch_size` rows, in bfloat16 when `precision` is FAST, else in float32."""
    import openvino

    core = openvino.Core()
    model = core.read_model(path)
    partial = model.inputs[0].get_partial_shape()  # (-1, h, w, c): the batch left free
    model.reshape([batch_size, *(partial[axis].get_length() for axis in range(1, partial.rank.get_length()))])
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == FAST else "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one stream on all cores: measured 93 img/s against THROUGHPUT's 53
            "INFERENCE_NUM_THREADS": threads,
        },
    )
    request = compiled.create_infer_request()
    input_dtype = np.dtype(model.inputs[0].get_element_type().to_dtype())

    def run(batch: np.ndarray) -> np.ndarray:
        return np.array(request.infer([batch])[0])  # a copy: the request reuses its output buffer

    return run, input_dtype
