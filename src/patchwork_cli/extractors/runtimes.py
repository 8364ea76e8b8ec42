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

One decision: choose_runtime returns a RuntimeChoice, made once (extract makes it in the process
that reports it, and sends it to every Dask worker), and whatever opens an engine takes it. Each
engine is a module of its own, engine_<name>.py, saying what file it runs (the Keras model itself,
a .tflite file) and how to open it, listed in ENGINES; a new engine is one module and its entry
there, its name in store/config.py's Runtime.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extractors import engine_keras, engine_litert, engine_openvino
from patchwork_cli.extractors.conversion import check_batch
from patchwork_cli.store.config import Precision, Runtime

# Every engine by its name (store/config.py's RUNTIMES but auto), in the order `auto` tries them
# for exact features: Keras last, needing no package, what runs when no inference engine is installed.
ENGINES = {engine.NAME: engine for engine in (engine_litert, engine_openvino, engine_keras)}
EXACT = "exact"
FAST_OPENVINO = engine_openvino.FAST  # what a store of fast features records as its precision
# max |engine - keras| / max |keras| on the check batch; measured: 6e-6 (LiteRT), 9e-6 (OpenVINO f32)
EXACT_TOLERANCE = 1e-4
# Fast (bfloat16) features must agree with Keras' to this cosine on the check batch: bfloat16's
# rounding leaves about 0.99 (0.987 measured on a Xeon with AMX), so far below is a broken engine
FAST_MIN_COSINE = 0.95


@dataclass
class Engine:
    """A model compiled for batches of exactly `batch_size` rows."""

    runtime: str  # a name of ENGINES: keras, litert or openvino
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


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs an extractor here, decided once by choose_runtime and taken by whatever opens an
    engine; small and picklable, so a Dask worker runs what the client decided and reported."""

    runtime: str  # a name of ENGINES: keras, litert or openvino
    precision: str  # EXACT or FAST_OPENVINO: what it computes
    note: str = ""  # what was given up to run here ("" when nothing was)

    @property
    def file(self) -> str | None:
        """The suffix of the file its engine runs (.tflite); None for the Keras model itself."""
        return ENGINES[self.runtime].FILE


def choose_runtime(runtime: Runtime, precision: Precision) -> RuntimeChoice:
    """What runs for the configured runtime and precision: the engine, what it computes, and what
    was given up to run here."""
    if runtime in ENGINES and not _installed(runtime):
        _, package = ENGINES[runtime].PACKAGE
        raise PatchworkError(
            f"extractor.runtime: {runtime} needs the package {package}, which is not installed "
            f"(pip install {package}); or set runtime: auto"
        )
    if precision == "fast":
        if runtime in ("auto", "openvino") and _installed("openvino") and engine_openvino.has_bfloat16():
            return RuntimeChoice("openvino", FAST_OPENVINO)
        why = (
            "needs OpenVINO (pip install openvino)"
            if runtime == "auto" and not _installed("openvino")
            else "needs OpenVINO on a CPU with bfloat16 (AVX512-BF16 or AMX), which this one lacks"
            if runtime in ("auto", "openvino")
            else f"runs on OpenVINO only, not on {runtime}"
        )
        exact = choose_runtime(runtime, "exact")
        note = "; ".join(filter(None, [f"precision fast {why}: exact features instead", exact.note]))
        return RuntimeChoice(exact.runtime, EXACT, note)
    if runtime != "auto":
        return RuntimeChoice(runtime, EXACT)
    chosen = next(name for name in ENGINES if _installed(name))  # Keras, last, always is
    note = "no inference engine installed (pip install ai-edge-litert): Keras runs the extractor"
    return RuntimeChoice(chosen, EXACT, note if chosen == "keras" else "")


def cannot_run(choice: RuntimeChoice) -> str:
    """Why this machine cannot run `choice`, made on another (a Dask client); "" when it can."""
    if not _installed(choice.runtime):
        package = ENGINES[choice.runtime].PACKAGE[1]
        return f"{choice.runtime} needs the package {package}, which is not installed (pip install {package})"
    if choice.precision == FAST_OPENVINO and not engine_openvino.has_bfloat16():
        return "precision fast needs OpenVINO on a CPU with bfloat16 (AVX512-BF16 or AMX), which this one lacks"
    return ""


def open_extractor_engine(extractor, choice: RuntimeChoice, batch_size: int) -> Engine:
    """The engine of `choice` running `extractor` (extractors.loading.Extractor), on the file its
    engine runs (converted from the Keras model and cached: conversion.py) and checked against
    Keras when it opens; Engine.note is the choice's."""
    artefact, reference = ENGINES[choice.runtime].artefact(extractor)
    engine = _open(choice, artefact, batch_size)
    if reference is not None:  # None: the engine is Keras, the reference itself
        check_engine(engine, check_batch(extractor.imshape, extractor.channels), reference, extractor.name)
    return engine


def open_file(path: str, choice: RuntimeChoice, batch_size: int) -> Engine:
    """The model file at `path` (of the kind `choice.file` names, such as an export's model.tflite)
    on the engine of `choice`, compiled for batches of `batch_size`."""
    if choice.file is None or not str(path).endswith(choice.file):
        raise ValueError(f"{choice.runtime} does not run {path}")
    return _open(choice, str(path), batch_size)


def keras_engine(model, batch_size: int, input_dtype=np.float32, note: str = "") -> Engine:
    """`model` on Keras for batches of `input_dtype` (engine_keras.py: each batch cut into one part
    per core, the parts run at once)."""
    run, _ = engine_keras.load(model, EXACT, batch_size, cpu_threads())
    return Engine("keras", EXACT, batch_size, np.dtype(input_dtype), run, note)


def _open(choice: RuntimeChoice, artefact, batch_size: int) -> Engine:
    run, input_dtype = ENGINES[choice.runtime].load(artefact, choice.precision, batch_size, cpu_threads())
    return Engine(choice.runtime, choice.precision, batch_size, input_dtype, run, choice.note)


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
    package = ENGINES[runtime].PACKAGE
    return package is None or importlib.util.find_spec(package[0]) is not None
