"""Filling feature-store chunks: decode images ahead on threads, run them through an engine,
write each chunk whole on a writer thread. The same code runs in extract's own process and in a
Dask task (extract_chunk is one task's body).

The three stages overlap, so that a core left by one stage goes to another: decoding threads
(Pillow releases Python's lock), the engine in the calling thread (LiteRT, OpenVINO and TensorFlow
release it, and use every core: runtimes.cpu_threads) and one writer thread (the cast to the
store's dtype, zstd and the file writes). Measured on 2 cores (benchmarks/extract_bench.py's
images, LiteRT, 640 images, five interleaved rounds in one process): writing each chunk between
batches ran 161 img/s, 0.87 of the bound the stages' core-ms put on the machine; on the writer
thread, 180 img/s, 0.92. Not adopted, for gaining nothing beyond the noise: a second chunk waiting
for the writer (181 img/s); decoding threads at nice 19 (0.95 against 0.95, and a low priority
would starve decoding on a machine busy with other work); taking turns (decode, then the engine
alone, 171 img/s); 1 or 3 decoding threads instead of one per core (OpenVINO bf16: 0.94 and 0.95
against 0.89, within the rounds' spread of 0.86 to 0.97).

Each chunk's rows go through the engine in fixed-size batches whatever the timing, so the store
written is the one a sequential run writes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from patchwork_cli.extractors.runtimes import cpu_threads
from patchwork_cli.store.features import DONE, FAILED, PENDING, FeatureStore
from patchwork_cli.util.image_files import SIGNATURE_WIDTH, THUMBNAIL_SIDE, read_image_file
from patchwork_cli.util.images import ImageError

# Chunks computed but not yet written: one waits while the writer writes the one before (a second
# gained nothing, see above); each holds 16 MiB of float32 features, so memory stays flat.
WRITE_QUEUE_CHUNKS = 1


def extract_chunk(store: FeatureStore, index: int, paths: list[str | None], extractor, engine) -> tuple[int, int]:
    """Decode, run through `engine` and write the pending rows of chunk `index` (`paths`: its rows'
    images, in order, None for a row to leave alone): one Dask task. Returns the rows processed and failed."""
    start, stop = store.chunk_bounds(index)
    return fill_chunks(
        store,
        {index: store.status_array[start:stop]},
        lambda row: paths[row - start] if row - start < len(paths) else None,
        lambda path: read_image_file(path, extractor.imshape, extractor.channels),
        engine,
        progress=False,
    )


def fill_chunks(store, statuses: dict, path_of, load, engine, progress, guard=None) -> tuple[int, int]:
    """Decode (`load` the image file `path_of(store row)`: an ImageFile), run through `engine` and write every
    pending row with an image of the chunks of `statuses` (chunk index -> its rows' status), one
    whole chunk at a time; a row whose path is None is left alone. Decoding runs ahead across chunk
    borders. `guard` (a DiskGuard) is told of each chunk written, and stops the work before the disk fills."""
    todo = {c: _pending_rows(store, c, status, path_of) for c, status in statuses.items()}
    rows = (row for chunk_rows in todo.values() for row in chunk_rows)
    processed = failed = 0
    with (
        tqdm(
            total=sum(len(chunk_rows) for chunk_rows in todo.values()),
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
            computed = _compute_chunk(store, index, statuses[index], items, engine)
            processed += len(items)
            failed += sum(isinstance(result, ImageError) for _, result in items)
            writer.write(index, computed, processed)
            bar.update(len(items))
    return processed, failed


def _pending_rows(store: FeatureStore, chunk: int, status: np.ndarray, path_of) -> list[int]:
    start = store.chunk_bounds(chunk)[0]
    rows = (start + int(i) for i in np.flatnonzero(status == PENDING))
    return [row for row in rows if path_of(row) is not None]


def _compute_chunk(store, index: int, status: np.ndarray, items: list, engine) -> tuple:
    """Chunk `index` whole as it is to be written (float32 features, status, reasons, and the
    images' signatures and thumbnails when the store records them), its pending rows `items`
    (row, ImageFile or ImageError) computed in batches of engine.batch_size."""
    start, stop = store.chunk_bounds(index)
    chunk_status = status.copy()
    # What the chunk holds is read only for rows this write keeps: a chunk written whole (every
    # chunk of a first extract) reads nothing, since a zarr read here queues behind the writer
    # thread's zarr work (measured: 45 ms a chunk, 12% of a LiteRT extract's time).
    whole = len(items) == stop - start
    if (chunk_status == DONE).any():
        features = store.features[start:stop].astype(np.float32)  # float16 comes back from float32 unchanged
    else:
        features = np.zeros((stop - start, *store.row_shape), np.float32)
    reasons = [""] * (stop - start) if whole else list(store.reason_array[start:stop])
    records = _chunk_records(store, index, whole)
    good = [(row, image) for row, image in items if not isinstance(image, ImageError)]
    for offset in range(0, len(good), engine.batch_size):
        batch = good[offset : offset + engine.batch_size]
        outputs = engine.predict(np.stack([image.pixels for _, image in batch]))  # cast to float32 as it is padded
        for (row, image), output in zip(batch, outputs, strict=True):
            features[row - start] = output
            chunk_status[row - start] = DONE
            reasons[row - start] = ""
            if records is not None:
                records[0][row - start], records[1][row - start] = image.signature, image.thumbnail
    for row, error in items:
        if isinstance(error, ImageError):
            chunk_status[row - start] = FAILED
            reasons[row - start] = str(error)
            if records is not None:
                records[0][row - start], records[1][row - start] = 0, 0
    return features, chunk_status, reasons, records


def _chunk_records(store, index: int, whole: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """The signatures and thumbnails chunk `index` is to be written with: as stored for the rows it
    keeps, zeros for a chunk written whole; None for a store without them (see FeatureStore)."""
    if not store.has_image_records:
        return None
    if not whole:
        return store.image_records(index)
    start, stop = store.chunk_bounds(index)
    rows = stop - start
    return np.zeros((rows, SIGNATURE_WIDTH), np.int64), np.zeros((rows, THUMBNAIL_SIDE, THUMBNAIL_SIDE), np.uint8)


def write_chunk(
    store: FeatureStore, index: int, features: np.ndarray, status: np.ndarray, reasons: list, records=None
) -> None:
    """What the writer thread does with a computed chunk: the features in the store's dtype (numpy
    casts float32 to float16 one value at a time, 0.19 core-ms a 7x7x1280 map: on the writer's
    thread it does not hold up the engine), then FeatureStore.write_chunk."""
    store.write_chunk(index, features.astype(store.features.dtype, copy=False), status, reasons, records)


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

    def write(self, index: int, computed: tuple, images_done: int) -> None:
        """Queue chunk `index` for writing (`computed`: what _compute_chunk returns; blocking while
        the queue is full); `images_done` is what the guard reports as kept if it stops after this chunk."""
        self._raise_error()
        self.jobs.put((index, computed, images_done))
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        # after an error, or once the caller failed, the jobs are taken and dropped: a caller
        # blocked on a full queue is freed, and sees the error
        while (job := self.jobs.get()) is not None:
            if self.error is not None or self.abandoned:
                continue
            index, computed, images_done = job
            try:
                write_chunk(self.store, index, *computed)
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

    with concurrent.futures.ThreadPoolExecutor(max_workers=cpu_threads()) as pool:
        window: collections.deque = collections.deque()
        for row in rows:
            window.append((row, pool.submit(safe, row)))
            if len(window) >= lookahead:
                done_row, future = window.popleft()
                yield done_row, future.result()
        while window:
            done_row, future = window.popleft()
            yield done_row, future.result()
