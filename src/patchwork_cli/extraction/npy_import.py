"""extract --from-npy: a feature store filled from pre-extracted features, no extractor run.

The .npy holds one row per labels.csv row, in order, as vectors (n, d) or maps (n, h, w, c). It is
read a chunk at a time through a memory map opened for that chunk alone: pages of a mapping
count in the process's resident memory for as long as it stays mapped, so one mapping of a 5 GB
file read to its end would hold 5 GB.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extraction.extract import ExtractReport, prepare_store, write_failures_csv
from patchwork_cli.store.features import DONE, FAILED, spatial_average
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.project import Project
from patchwork_cli.util.checksums import file_sha256
from patchwork_cli.util.projection import sample_from_chunks


def import_npy(project: Project, npy_path: Path, *, overwrite: bool = False) -> ExtractReport:
    """Fill the store from pre-extracted features, one row per labels.csv row, in order."""
    npy_path = Path(npy_path)
    shape = _open(npy_path).shape
    filepaths = project.labels()[FILEPATH].tolist()
    rows = len(filepaths)
    if len(shape) < 2 or shape[0] != rows:
        raise PatchworkError(
            f"{npy_path}: shape {shape} does not fit the project: expected ({rows}, ...), "
            "one row per labels.csv row, in order"
        )
    dtype = project.config.extractor.dtype
    identity = {
        "name": f"npy:{npy_path.name}",
        "weights_sha256": file_sha256(npy_path),
        "imshape": None,
        "channels": None,
        "pooling": None,
        "output_shape": list(shape[1:]),
        "dtype": dtype,
    }
    # The .npy's rows are labels.csv's rows as they are now: a new store in that order, always.
    store, match = prepare_store(project, filepaths, tuple(shape[1:]), dtype, identity, overwrite, fresh=True)
    started = time.perf_counter()
    store.fit_axes(_pooled_sample(npy_path, store))  # so that each chunk is reduced as it is written
    failed = 0
    for index in range(store.chunk_count):
        start, stop = store.chunk_bounds(index)
        values = np.array(_open(npy_path)[start:stop])  # a writable copy; the mapping closes with it
        finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        values[~finite] = 0
        reasons = ["" if ok else "features not finite in the .npy file" for ok in finite]
        store.write_chunk(index, values, np.where(finite, DONE, FAILED).astype(np.uint8), reasons)
        failed += int((~finite).sum())
    write_failures_csv(project.directory, store, match, filepaths)
    seconds = time.perf_counter() - started
    return ExtractReport(rows, failed, seconds, store.counts(match), identity["name"], runtime="none", precision="none")


def _open(npy_path: Path) -> np.ndarray:
    try:
        return np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PatchworkError(f"{npy_path}: not a readable .npy array ({error})") from None


def _pooled_sample(npy_path: Path, store) -> np.ndarray:
    """The pooled vectors of a sample of the finite rows, drawn as the store draws its own
    (projection.sample_from_chunks, over the store's chunks): what the store's axes are fitted on."""

    def finite_rows(index: int) -> np.ndarray:
        block = np.asarray(_open(npy_path)[slice(*store.chunk_bounds(index))], dtype=np.float32)
        block = block[np.isfinite(block.reshape(len(block), -1)).all(axis=1)]
        return spatial_average(block) if store.has_maps else block

    return sample_from_chunks(store.chunk_count, finite_rows, np.random.default_rng(0))
