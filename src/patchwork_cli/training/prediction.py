"""A run's predictions and embeddings for every row with features, chunk by chunk from the feature
store into the run's zarr arrays, so memory stays flat as the project grows; with a Dask cluster
each chunk is a task (predict_chunk_task) on its workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from patchwork_cli.store import runs
from patchwork_cli.store.features import FeatureStore
from patchwork_cli.util.projection import REDUCED_WIDTH, principal_axes, project, sample_from_chunks

PREDICT_BATCH = 256
PREDICT_BLOCK_BYTES = 32 * 2**20  # float32 features read and predicted at once in train's prediction pass


@dataclass
class Fitted:
    """What a fit hands to the run: its history (a `loss` per epoch, and any other columns), and
    `write(staging)`, which writes its model (if any), predictions and embeddings into the run's
    staging directory and returns the probabilities of the run's rows (in the store's order)."""

    history: dict
    write: Callable[[Path], np.ndarray]


def predict_all(
    model, store: FeatureStore, rows: int, has_features: np.ndarray, directory: Path, from_average: bool
) -> np.ndarray:
    """Probabilities (rows, C) and embeddings for the store's first `rows` rows, a few whole
    feature chunks at a time, into the run's zarr arrays; NaN where `has_features` is False.
    `from_average`: the model takes the store's pooled copy. Returns the probabilities."""
    axes = embedding_axes(model, store, has_features, directory, from_average)
    probabilities, embeddings = run_arrays(directory, rows, store.chunk_rows, *_output_widths(model, axes))
    source = store.pooled if from_average else store.features
    row_bytes = int(np.prod(source.shape[1:])) * 4
    per_block = store.chunk_rows * max(1, PREDICT_BLOCK_BYTES // (row_bytes * store.chunk_rows))
    end = min(rows, store.rows)
    for start in range(0, end, per_block):
        stop = min(start + per_block, end)
        block = has_features[start:stop]
        predict_chunk(model, store, start, stop, block, probabilities, embeddings, from_average, axes)
    return probabilities[:]


def embedding_axes(model, store: FeatureStore, has_features, directory: Path, from_average: bool):
    """The principal axes (width, REDUCED_WIDTH) the run stores its embeddings on, fitted on the
    embeddings of a sample of rows and saved in the run (EMBEDDING_AXES_FILE); None when the head's
    embedding is no wider than that (stored as it is). At a million rows a 1280-d embedding is 5 GB
    that sampling would have to read; on 128 axes, 0.5 GB."""
    width, _ = _output_widths(model, None)
    if width <= REDUCED_WIDTH:
        return None
    source = store.pooled if from_average else store.features
    chunks = [c for c in range(store.chunk_count) if has_features[slice(*store.chunk_bounds(c))].any()]

    def embedded(position: int) -> np.ndarray:
        start, stop = store.chunk_bounds(chunks[position])
        present = np.flatnonzero(has_features[start:stop])
        return model.predict_on_batch(np.asarray(source[start:stop], dtype=np.float32)[present])[0]

    axes = principal_axes(sample_from_chunks(len(chunks), embedded, np.random.default_rng(0)))
    np.save(directory / runs.EMBEDDING_AXES_FILE, axes)
    return axes


def predict_all_on_cluster(
    client, location: str, model, store, rows: int, has_features, directory: Path, from_average: bool
):
    """predict_all with each chunk a Dask task; the workers load the head from the run's model.keras."""
    from patchwork_cli.distributed.tasks import run_chunk_tasks

    axes = embedding_axes(model, store, has_features, directory, from_average)  # the tasks load them from the run
    probabilities, _ = run_arrays(directory, rows, store.chunk_rows, *_output_widths(model, axes))
    model_path = str(directory / runs.MODEL_FILE)
    chunks = _prediction_chunks(store, rows)
    arguments = [
        (location, model_path, start, stop, has_features[start:stop], str(directory), from_average)
        for start, stop in chunks
    ]
    total = sum(stop - start for start, stop in chunks)
    run_chunk_tasks(
        client, predict_chunk_task, arguments, total=total, desc="predict", unit="row", count=int, progress=None
    )
    return probabilities[:]


def _output_widths(model, axes) -> tuple[int, int]:
    """The widths of what the run stores of an embedding model's two outputs: its embedding (on
    `axes`, when not None), and the classes."""
    embedding_width, classes = (int(o.shape[-1]) for o in model.outputs)
    return (embedding_width if axes is None else axes.shape[1]), classes


def run_arrays(
    directory: Path, rows: int, chunk: int, embedding_width: int, classes: int
) -> tuple[zarr.Array, zarr.Array]:
    """The run's predictions (rows, C) and embeddings (rows, width) arrays, all NaN, chunked like
    the feature store, so that each chunk of rows is one file of each: tasks never share one."""

    def nan_array(name: str, width: int) -> zarr.Array:
        return zarr.create_array(
            str(directory / name), shape=(rows, width), chunks=(chunk, width), dtype="float32", fill_value=np.nan
        )

    return nan_array(runs.PREDICTIONS_NAME, classes), nan_array(runs.EMBEDDINGS_NAME, embedding_width)


def _prediction_chunks(store: FeatureStore, rows: int) -> list[tuple[int, int]]:
    """(start, stop) of each feature-store chunk among the run's `rows`."""
    end = min(rows, store.rows)
    return [(start, min(start + store.chunk_rows, end)) for start in range(0, end, store.chunk_rows)]


def predict_chunk(
    model, store: FeatureStore, start: int, stop: int, has_features, probabilities, embeddings, from_average, axes
) -> None:
    """Embeddings (on `axes`, when not None) and probabilities of rows start..stop (whole feature
    chunks) that have features, written over those rows of the run's arrays: one Dask task is one
    chunk. `from_average`: the model reads the store's pooled copy, not the maps."""
    present = np.flatnonzero(has_features)
    if not len(present):
        return
    source = store.pooled if from_average else store.features
    features = np.asarray(source[start:stop], dtype=np.float32)[present]
    embedded, predicted = model.predict_on_batch(features)  # a block is a few tens of MiB: one batch
    if axes is not None:
        embedded = project(embedded, axes)
    block_p = np.full((stop - start, probabilities.shape[1]), np.nan, np.float32)
    block_e = np.full((stop - start, embeddings.shape[1]), np.nan, np.float32)
    block_p[present], block_e[present] = predicted, embedded
    probabilities[start:stop], embeddings[start:stop] = block_p, block_e


def predict_chunk_task(
    location: str, model_path: str, start: int, stop: int, has_features, run_dir: str, from_average: bool
) -> int:
    """One Dask task: rows start..stop of the run's arrays in `run_dir`, on this worker's copy of the head."""
    from patchwork_cli.distributed.tasks import load_once

    store = FeatureStore.open(location)
    model = load_once("head", (model_path, from_average), lambda: _load_head(model_path, from_average))
    probabilities = zarr.open_array(str(Path(run_dir) / runs.PREDICTIONS_NAME), mode="r+")
    embeddings = zarr.open_array(str(Path(run_dir) / runs.EMBEDDINGS_NAME), mode="r+")
    axes_file = Path(run_dir) / runs.EMBEDDING_AXES_FILE
    axes = np.load(axes_file) if axes_file.is_file() else None
    predict_chunk(model, store, start, stop, np.asarray(has_features), probabilities, embeddings, from_average, axes)
    return stop - start


def _load_head(model_path: str, from_average: bool):
    from patchwork_cli.util.tensorflow_runtime import start_tensorflow

    start_tensorflow()
    import keras

    from patchwork_cli.modeling.heads import embedding_model

    return embedding_model(keras.models.load_model(model_path, compile=False), from_average)
