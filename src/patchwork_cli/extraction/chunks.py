"""Filling feature-store chunks: decode images ahead on threads, run them through an engine,
write each chunk whole on a writer thread. The same code runs in extract's own process and in a
Dask task (extract_chunk is one task's body).

Three stages overlap, so that no core waits for another stage: decoding threads (Pillow releases
Python's lock), the engine in the calling thread (LiteRT, OpenVINO and TensorFlow release it) and
one writer thread (zstd and the file writes). Each chunk's rows go through the engine in fixed-size
batches whatever the timing, so the store written is the one a sequential run writes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import queue
import sys
import threading
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from patchwork_cli.extractors.runtimes import cpu_threads
from patchwork_cli.store.features import DONE, FAILED, PENDING, FeatureStore
from patchwork_cli.util.images import ImageError, load_image

# Chunks computed but not yet written: one waits while the writer writes the one before. Measured
# (benchmarks/extract_bench.py): a deeper queue gains nothing once the writer keeps up, and each
# chunk waiting holds about 8 MiB of features, so memory stays flat in the number of images.
WRITE_QUEUE_CHUNKS = 1


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
    todo = {c: _pending_rows(store, c, status, path_of) for c, status in statuses.items()}
    rows = (row for chunk_rows in todo.values() for row in chunk_rows)
    processed = failed = 0
    with (
        tqdm(
            total=sum(len(rows) for rows in todo.values()),
            unit="img",
            desc="extract",
            disable=None if progress is None else not progress,
            smoothing=0.1,
        ) as bar,
        ChunkWriter(store, guard) as writer,
    ):
        decoded = prefetch(lambda row: load(path_of(row)), rows, lookahead=4 * engine.batch_size)
        for index, items in itertools.groupby(decoded, key=lambda item: item[0] // store.chunk_rows):
            items = list(items)
            features, status, reasons = _compute_chunk(store, index, statuses[index], items, engine)
            processed += len(items)
            failed += sum(isinstance(result, ImageError) for _, result in items)
            writer.write(index, features, status, reasons, processed)
            bar.update(len(items))
    return processed, failed


def _pending_rows(store: FeatureStore, chunk: int, status: np.ndarray, path_of) -> list[int]:
    start = store.chunk_bounds(chunk)[0]
    rows = (start + int(i) for i in np.flatnonzero(status == PENDING))
    return [row for row in rows if path_of(row) is not None]


def _compute_chunk(store, index: int, status: np.ndarray, items: list, engine) -> tuple[np.ndarray, np.ndarray, list]:
    """Chunk `index` whole as it is to be written (features, status, reasons), its pending rows
    `items` (row, pixels or ImageError) computed in batches of engine.batch_size."""
    start, stop = store.chunk_bounds(index)
    chunk_status = status.copy()
    done_before = (chunk_status == DONE).any()
    features = (
        store.features[start:stop] if done_before else np.zeros((stop - start, *store.row_shape), store.features.dtype)
    )
    reasons = list(store.reason_array[start:stop])
    good = [(row, pixels) for row, pixels in items if not isinstance(pixels, ImageError)]
    for offset in range(0, len(good), engine.batch_size):
        batch = good[offset : offset + engine.batch_size]
        outputs = engine.predict(np.stack([pixels for _, pixels in batch]))  # cast to float32 as it is padded
        for (row, _), output in zip(batch, outputs, strict=True):
            features[row - start] = output
            chunk_status[row - start] = DONE
            reasons[row - start] = ""
    for row, error in items:
        if isinstance(error, ImageError):
            chunk_status[row - start] = FAILED
            reasons[row - start] = str(error)
    return features, chunk_status, reasons


class ChunkWriter:
    """store.write_chunk (then guard.written) on a thread of its own, in the order the chunks come.

    The first error the writer meets (a full disk, the guard's stop) is raised again, as itself,
    in the calling thread: by the next write() or by leaving the `with`. After it, nothing more is
    written: the chunks still queued stay pending on disk, to be extracted by the next run.
    """

    def __init__(self, store: FeatureStore, guard=None, depth: int = WRITE_QUEUE_CHUNKS):
        self.store, self.guard = store, guard
        self.jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, name="patchwork-chunk-writer", daemon=True)

    def __enter__(self) -> ChunkWriter:
        self.thread.start()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.abandoned = kind is not None  # the caller failed: write nothing more, just stop
        self.jobs.put(None)
        self.thread.join()
        if kind is None:
            self._raise_error()

    def write(self, index: int, features, status, reasons, images_done: int) -> None:
        """Queue chunk `index` for writing (blocking while the queue is full); `images_done` is what
        the guard reports as kept if it stops after this chunk."""
        self._raise_error()
        self.jobs.put((index, features, status, reasons, images_done))
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        yield_to_engine(WRITER_NICE)
        # after an error, or once the caller failed, the jobs are taken and dropped: a caller
        # blocked on a full queue is freed, and sees the error
        while (job := self.jobs.get()) is not None:
            if self.error is not None or self.abandoned:
                continue
            index, features, status, reasons, images_done = job
            try:
                self.store.write_chunk(index, features, status, reasons)
                if self.guard is not None:
                    self.guard.written(index, images_done)
            except BaseException as error:  # noqa: BLE001 -- handed to the calling thread, which raises it
                self.error = error


def prefetch(decode, rows: Iterator[int], lookahead: int) -> Iterator[tuple[int, object]]:
    """(row, decode(row) or its ImageError) in order, decoding up to `lookahead` rows ahead on threads."""

    def safe(row):
        try:
            return decode(row)
        except ImageError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=DECODE_THREADS or cpu_threads(), initializer=lambda: yield_to_engine(DECODE_NICE)
    ) as pool:
        window: collections.deque = collections.deque()
        for row in rows:
            window.append((row, pool.submit(safe, row)))
            if len(window) >= lookahead:
                done_row, future = window.popleft()
                yield done_row, future.result()
        while window:
            done_row, future = window.popleft()
            yield done_row, future.result()


DECODE_THREADS = 0  # 0: one per core; set by measurement (see the module's notes)
DECODE_NICE = 0
WRITER_NICE = 0


def yield_to_engine(nice: int) -> None:
    """Lower the calling thread's priority by `nice` (Linux: each thread has its own nice value)."""
    if nice and sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError:
            pass
