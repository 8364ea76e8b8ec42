"""What runs an extractor's model: Keras itself, or an inference engine (LiteRT, OpenVINO).

`extractor.runtime` picks it (auto, keras, litert, openvino) and `extractor.precision`
what it may compute: `exact` (float32; features within EXACT_TOLERANCE of Keras', so
exact features from any runtime belong in one store) or `fast` (OpenVINO in bfloat16,
on CPUs that have it: AVX512-BF16 or AMX). Measured on EfficientNet-Lite0, batch 32,
224x224 (README, Extraction speed): on the 2-core AMD EPYC (AVX2) machine LiteRT's
XNNPACK ran 104 img/s, OpenVINO float32 93, Keras 38; on the 2-core Xeon with AMX LiteRT
278, OpenVINO float32 301, OpenVINO bfloat16 725, Keras 134. So `auto` takes LiteRT for
exact features (the fastest or within 8% of it, and the file it runs is what phones run),
OpenVINO bfloat16 for fast ones, and falls back, saying so, when a package or the CPU's
instructions are missing.

Every engine runs fixed-size batches (zero-padded, as Keras does here): one input shape
means the same kernels for every row, so a row's features do not depend on its batch
companions. Every engine is checked against Keras' output on a fixed batch when it opens.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from patchwork_cli.errors import PatchworkError

RUNTIMES = ("auto", "keras", "litert", "openvino")
PRECISIONS = ("exact", "fast")
EXACT = "exact"
FAST_OPENVINO = "fast:openvino-bf16"  # what a store of fast features records as its precision
# max |engine - keras| / max |keras| on the check batch; measured: 6e-6 (LiteRT), 9e-6 (OpenVINO f32)
EXACT_TOLERANCE = 1e-4
# bfloat16 features agree with float32 ones to a cosine of about 0.99 (issue [12]); far below is a broken engine
FAST_MIN_COSINE = 0.95
PACKAGES = {"litert": ("ai_edge_litert", "ai-edge-litert"), "openvino": ("openvino", "openvino")}


@dataclass
class Engine:
    """A model compiled for batches of exactly `batch_size` rows."""

    runtime: str  # keras, litert or openvino
    precision: str  # EXACT or FAST_OPENVINO: what it really computes
    batch_size: int
    input_dtype: np.dtype
    run_batch: Callable[[np.ndarray], np.ndarray]
    note: str = ""  # why this is not what was asked for ("" when it is)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """The outputs of up to `batch_size` rows, through a batch zero-padded to `batch_size`."""
        count = len(pixels)
        padded = np.zeros((self.batch_size, *pixels.shape[1:]), dtype=self.input_dtype)
        padded[:count] = pixels
        return self.run_batch(padded)[:count]

    @property
    def description(self) -> str:
        return f"{self.runtime}, {'exact' if self.precision == EXACT else 'fast'}"


def keras_engine(model, batch_size: int, input_dtype=np.float32, note: str = "") -> Engine:
    """`model` on Keras, each batch cut into one part per core, the parts run at once.

    TensorFlow's intra-op pool waits for its slowest thread at every layer, and a decoding thread
    on the same core makes one slow: one call on every core ran extract at 0.81 of the stages'
    bound. Parts run at once fill each other's waits. Measured on 2 cores (AMD EPYC, extract_bench's
    JPEGs, 768 images decoded alongside, three interleaved rounds in one process): 182, 187 and 190
    img/s against 162, 174 and 166 for one predict_on_batch call a batch decoding in turns (its
    best before), with outputs bit for bit the same on the bundled extractor. Each part has a fixed
    size, so a row's output still does not depend on its batch companions."""
    import tensorflow as tf  # started by whoever built `model`

    call = tf.function(lambda part: model(part, training=False))
    parts = min(cpu_threads(), batch_size)
    pool = concurrent.futures.ThreadPoolExecutor(parts, thread_name_prefix="patchwork-keras")

    def run(batch: np.ndarray) -> np.ndarray:
        return np.concatenate(list(pool.map(lambda part: call(part).numpy(), np.array_split(batch, parts))))

    return Engine("keras", EXACT, batch_size, np.dtype(input_dtype), run, note)


def open_extractor_engine(extractor, runtime: str, precision: str, batch_size: int) -> Engine:
    """The engine that runs `extractor` (extractors.loading.Extractor) as the config asks, or as
    near as this machine allows (Engine.note says how and why)."""
    chosen, precision_used, note = choose_runtime(runtime, precision)
    if chosen == "keras":
        return keras_engine(extractor.model, batch_size, note=note)
    from patchwork_cli.extractors.conversion import cached_extractor_model, check_batch

    model_path, reference = cached_extractor_model(extractor)
    engine = open_tflite(str(model_path), chosen, precision_used, batch_size, note)
    check_engine(engine, check_batch(extractor.imshape, extractor.channels), reference, extractor.name)
    return engine


def open_tflite(path: str, runtime: str, precision: str, batch_size: int, note: str = "") -> Engine:
    """The TFLite model at `path` on LiteRT or OpenVINO, compiled for batches of `batch_size`."""
    if runtime == "litert":
        return _litert(path, batch_size, note)
    return _openvino(path, precision, batch_size, note)


def choose_runtime(runtime: str, precision: str) -> tuple[str, str, str]:
    """(runtime, precision, note) for the configured ones: what runs, what it computes, and
    what was given up to run here ("" when nothing was)."""
    if runtime in PACKAGES and not _installed(runtime):
        module, package = PACKAGES[runtime]
        raise PatchworkError(
            f"extractor.runtime: {runtime} needs the package {package}, which is not installed "
            f"(pip install {package}); or set runtime: auto"
        )
    if precision == "fast":
        if runtime in ("auto", "openvino") and _installed("openvino") and _openvino_has_bfloat16():
            return "openvino", FAST_OPENVINO, ""
        why = (
            "needs OpenVINO (pip install openvino)"
            if runtime == "auto" and not _installed("openvino")
            else "needs OpenVINO on a CPU with bfloat16 (AVX512-BF16 or AMX), which this one lacks"
            if runtime in ("auto", "openvino")
            else f"runs on OpenVINO only, not on {runtime}"
        )
        runtime_now, _, note = choose_runtime(runtime, "exact")
        return runtime_now, EXACT, "; ".join(filter(None, [f"precision fast {why}: exact features instead", note]))
    if runtime != "auto":
        return runtime, EXACT, ""
    for engine in ("litert", "openvino"):
        if _installed(engine):
            return engine, EXACT, ""
    return "keras", EXACT, "no inference engine installed (pip install ai-edge-litert): Keras runs the extractor"


def check_engine(engine: Engine, batch: np.ndarray, reference: np.ndarray, name: str) -> None:
    """Refuse an engine whose outputs on the check batch stray from Keras' `reference`."""
    outputs = engine.predict(batch).astype(np.float64).reshape(len(batch), -1)
    expected = reference.astype(np.float64).reshape(len(batch), -1)
    if engine.precision == EXACT:
        error = float(np.abs(outputs - expected).max() / max(np.abs(expected).max(), 1e-12))
        if error <= EXACT_TOLERANCE:
            return
        found = f"differ from Keras' by {error:.2g} of their range (at most {EXACT_TOLERANCE:g} allowed)"
    else:
        norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(expected, axis=1)
        cosine = float(((outputs * expected).sum(axis=1) / np.maximum(norms, 1e-12)).min())
        if cosine >= FAST_MIN_COSINE:
            return
        found = f"agree with Keras' only to a cosine of {cosine:.3f} (at least {FAST_MIN_COSINE} expected)"
    raise PatchworkError(
        f"{name}: the {engine.description} engine's outputs on the check batch {found}; "
        "set extractor.runtime: keras (and tell us: this is a conversion bug)"
    )


def cpu_threads() -> int:
    """The cores this process may run on (a container's or a Dask worker's share, not the host's):
    the engine's threads, and extract's decoding threads.

    The engine takes every core although decoding and writing need some: it is three quarters of
    extract's CPU, and with fewer threads it cannot use the cores the others leave. Measured on 2
    cores (AMD EPYC, benchmarks/extract_bench.py's images, fill_chunks in one process): LiteRT
    141-168 img/s with 2 threads, 111-116 with 1 (one thread alone runs 130); OpenVINO bf16 226-261
    against 225-255, where the engine alone runs 460 img/s against 250."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _installed(runtime: str) -> bool:
    return importlib.util.find_spec(PACKAGES[runtime][0]) is not None


def _openvino_has_bfloat16() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _litert(path: str, batch_size: int, note: str) -> Engine:
    from ai_edge_litert.interpreter import Interpreter

    from patchwork_cli.util.tensorflow_runtime import native_stderr_silenced

    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." as it applies the
    # delegate, which happens again when the tensors are resized and allocated
    with native_stderr_silenced():
        interpreter = Interpreter(model_path=path, num_threads=cpu_threads())
        (source,) = interpreter.get_input_details()
        target = interpreter.get_output_details()[0]["index"]
        interpreter.resize_tensor_input(source["index"], (batch_size, *source["shape"][1:]), strict=False)
        interpreter.allocate_tensors()

    def run(batch: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()  # releases the GIL: decoding threads go on meanwhile
        return interpreter.get_tensor(target)  # a copy: the next invoke does not change it

    return Engine("litert", EXACT, batch_size, np.dtype(source["dtype"]), run, note)


def _openvino(path: str, precision: str, batch_size: int, note: str) -> Engine:
    import openvino

    core = openvino.Core()
    model = core.read_model(path)
    partial = model.inputs[0].get_partial_shape()  # (-1, h, w, c): the batch left free
    model.reshape([batch_size, *(partial[axis].get_length() for axis in range(1, partial.rank.get_length()))])
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == FAST_OPENVINO else "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one stream on all cores: measured 93 img/s against THROUGHPUT's 53
            "INFERENCE_NUM_THREADS": cpu_threads(),
        },
    )
    request = compiled.create_infer_request()
    input_dtype = np.dtype(model.inputs[0].get_element_type().to_dtype())

    def run(batch: np.ndarray) -> np.ndarray:
        return np.array(request.infer([batch])[0])  # a copy: the request reuses its output buffer

    return Engine("openvino", precision, batch_size, input_dtype, run, note)
