"""Filling feature-store chunks: decode images ahead on threads, run them through an engine,
write each chunk whole. The same code runs in extract's own process and in a Dask task
(extract_chunk is one task's body)."""

from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from patchwork_cli.store.features import DONE, FAILED, PENDING, FeatureStore
from patchwork_cli.util.images import ImageError, load_image


def extract_chunk(store: FeatureStore, index: int, paths: list[str | None], extractor, engine) -> tuple[int, int]:
    """Decode, run through `engine` and write the pending rows of chunk `index` (`paths`: its rows'
    images, in order, None for a row to leave alone): one Dask task. Returns the rows processed and failed."""
    start, stop = store.chunk_bounds(index)
    return fill_chunks(
        store,
        {index: store.status_array[start:stop]},
        lambda row: paths[row - start] if row - start < len(paths) else None,
        lambda path: load_image(path, extractor.imshape, extractor.channels),
        engine,
        progress=False,
    )


def fill_chunks(store, statuses: dict, path_of, load, engine, progress, guard=None) -> tuple[int, int]:
    """Decode (`load` the image file `path_of(store row)`), run through `engine` and write every
    pending row with an image of the chunks of `statuses` (chunk index -> its rows' status), one
    whole chunk at a time; a row whose path is None is left alone. Decoding runs ahead across chunk
    borders. `guard` (a DiskGuard) is told of each chunk written, and stops the work before the disk fills."""
    batch_size = engine.batch_size
    todo = {c: _pending_rows(store, c, status, path_of) for c, status in statuses.items()}
    total = sum(len(rows) for rows in todo.values())
    rows = (row for chunk_rows in todo.values() for row in chunk_rows)
    processed = failed = 0
    with tqdm(
        total=total, unit="img", desc="extract", disable=None if progress is None else not progress, smoothing=0.1
    ) as bar:
        decoded = prefetch(lambda row: load(path_of(row)), rows, lookahead=4 * batch_size)
        chunk_items: list = []
        for row, result in decoded:
            if chunk_items and row // store.chunk_rows != chunk_items[0][0] // store.chunk_rows:
                failed += _write_chunk(store, statuses, chunk_items, engine.predict, batch_size)
                processed += len(chunk_items)
                bar.update(len(chunk_items))
                if guard is not None:
                    guard.written(chunk_items[0][0] // store.chunk_rows, processed)
                chunk_items = []
            chunk_items.append((row, result))
        if chunk_items:
            failed += _write_chunk(store, statuses, chunk_items, engine.predict, batch_size)
            processed += len(chunk_items)
            bar.update(len(chunk_items))
    return processed, failed


def _pending_rows(store: FeatureStore, chunk: int, status: np.ndarray, path_of) -> list[int]:
    start = store.chunk_bounds(chunk)[0]
    rows = (start + int(i) for i in np.flatnonzero(status == PENDING))
    return [row for row in rows if path_of(row) is not None]


def _write_chunk(store, statuses, items, predict, batch_size) -> int:
    """Compute the chunk's pending rows and write the chunk whole; returns the failures."""
    index = items[0][0] // store.chunk_rows
    start, stop = store.chunk_bounds(index)
    chunk_status = statuses[index].copy()
    done_before = (chunk_status == DONE).any()
    features = (
        store.features[start:stop] if done_before else np.zeros((stop - start, *store.row_shape), store.features.dtype)
    )
    reasons = list(store.reason_array[start:stop])
    good = [(row, pixels) for row, pixels in items if not isinstance(pixels, ImageError)]
    for offset in range(0, len(good), batch_size):
        batch = good[offset : offset + batch_size]
        outputs = predict(np.stack([pixels for _, pixels in batch]))  # cast to float32 as it is padded
        for (row, _), output in zip(batch, outputs, strict=True):
            features[row - start] = output
            chunk_status[row - start] = DONE
            reasons[row - start] = ""
    failures = [(row, error) for row, error in items if isinstance(error, ImageError)]
    for row, error in failures:
        chunk_status[row - start] = FAILED
        reasons[row - start] = str(error)
    store.write_chunk(index, features, chunk_status, reasons)
    return len(failures)


def prefetch(decode, rows: Iterator[int], lookahead: int) -> Iterator[tuple[int, object]]:
    """(row, decode(row) or its ImageError) in order, decoding up to `lookahead` rows ahead on threads."""

    def safe(row):
        try:
            return decode(row)
        except ImageError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        window: collections.deque = collections.deque()
        for row in rows:
            window.append((row, pool.submit(safe, row)))
            if len(window) >= lookahead:
                done_row, future = window.popleft()
                yield done_row, future.result()
        while window:
            done_row, future = window.popleft()
            yield done_row, future.result()
