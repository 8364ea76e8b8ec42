"""The extract pipeline of extraction/chunks.py without TensorFlow: decoding threads, an engine
(here a numpy function in an Engine), and the writer thread: what it writes, that it writes the
store a sequential write writes, that its errors surface in the caller as themselves, and that
the disk guard hears of every chunk."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from builders import write_images

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extraction import chunks
from patchwork_cli.extractors.runtimes import EXACT, Engine
from patchwork_cli.store.features import DONE, FAILED, PENDING, FeatureStore
from patchwork_cli.util.image_files import read_image_file
from patchwork_cli.util.images import load_image

ROW_SHAPE = (8, 8, 4096)  # 512 KiB a float16 row: chunks of 16 rows (the store's smallest)
ROWS = 40  # chunks of 16, 16 and 8 rows
SIZE = (8, 8)


def fake_engine(batch_size: int = 4) -> Engine:
    """A deterministic 'model': each row's map is its pixels' mean colour times a ramp over channels."""
    ramp = np.linspace(0, 1, ROW_SHAPE[-1], dtype=np.float32)

    def run_batch(batch: np.ndarray) -> np.ndarray:
        assert len(batch) == batch_size  # fixed-size batches, zero-padded
        means = batch.reshape(len(batch), -1).mean(axis=1)
        return np.broadcast_to(means[:, None, None, None] * ramp, (len(batch), *ROW_SHAPE)).copy()

    return Engine("keras", EXACT, batch_size, np.dtype(np.float32), run_batch)


def new_store(tmp_path, name: str, rows: int = ROWS) -> tuple[FeatureStore, list[str]]:
    paths = [str(p) for p in write_images(tmp_path / "images", rows)]
    store = FeatureStore.create(tmp_path / name, paths, ROW_SHAPE, "float16", {"name": "fake"})
    assert store.chunk_rows == 16 and store.chunk_count == 3
    return store, paths


def fill(store: FeatureStore, paths: list, guard=None) -> tuple[int, int]:
    status = store.status()
    return chunks.fill_chunks(
        store,
        {c: status[slice(*store.chunk_bounds(c))] for c in range(store.chunk_count)},
        lambda row: paths[row],
        lambda path: read_image_file(path, SIZE, 3),
        fake_engine(),
        progress=False,
        guard=guard,
    )


class RecordingGuard:
    """A DiskGuard stand-in: records (chunk, images done) and, from chunk `stop_at` on, raises its stop."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[tuple[int, int]] = []
        self.stop_at = stop_at

    def written(self, chunk: int, images_done: int) -> None:
        self.calls.append((chunk, images_done))
        if chunk == self.stop_at:
            raise PatchworkError("stopped before the disk fills")


def test_the_writer_thread_writes_what_a_sequential_write_writes(tmp_path):
    store, paths = new_store(tmp_path, "threaded.zarr")
    guard = RecordingGuard()
    assert fill(store, paths, guard) == (ROWS, 0)
    assert guard.calls == [(0, 16), (1, 32), (2, 40)]  # told of each chunk, in order, once written

    expected = FeatureStore.create(tmp_path / "sequential.zarr", paths, ROW_SHAPE, "float16", {"name": "fake"})
    engine = fake_engine()
    pixels = np.stack([load_image(path, SIZE) for path in paths])
    for index in range(expected.chunk_count):
        start, stop = expected.chunk_bounds(index)
        maps = np.concatenate([engine.predict(pixels[row : row + 4]) for row in range(start, stop, 4)])
        maps = maps.astype(np.float16)  # as the pipeline holds a chunk, in the store's dtype
        expected.write_chunk(index, maps, np.full(stop - start, DONE, np.uint8), [""] * (stop - start))
    for name in ("features", "pooled", "status", "reason"):
        np.testing.assert_array_equal(store.group[name][:], expected.group[name][:], err_msg=name)


def test_failed_rows_are_recorded_with_their_reason(tmp_path):
    store, paths = new_store(tmp_path, "f.zarr")
    for row in (3, 20):
        open(paths[row], "wb").close()
    assert fill(store, paths) == (ROWS, 2)
    status = store.status()
    assert status[[3, 20]].tolist() == [FAILED, FAILED] and (np.delete(status, [3, 20]) == DONE).all()
    reasons = store.reason_array[:]
    assert reasons[3] == reasons[20] == "not an image (or an unsupported format)"
    assert set(np.delete(reasons, [3, 20]).tolist()) == {""}
    assert (store.features[3] == 0).all()


def test_an_error_writing_a_chunk_surfaces_as_itself_and_nothing_after_it_is_written(tmp_path, monkeypatch):
    store, paths = new_store(tmp_path, "f.zarr")
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    original = FeatureStore.write_chunk

    def write_chunk(self, index, *args):
        if index == 1:
            raise disk_full
        original(self, index, *args)

    monkeypatch.setattr(FeatureStore, "write_chunk", write_chunk)
    guard = RecordingGuard()
    with pytest.raises(OSError) as raised:
        fill(store, paths, guard)
    assert raised.value is disk_full  # the same object: extract.py tells a full disk by its errno
    status = store.status()
    assert (status[:16] == DONE).all() and (status[16:] == PENDING).all()
    assert guard.calls == [(0, 16)]


def test_the_guards_stop_surfaces_and_later_chunks_stay_pending(tmp_path):
    store, paths = new_store(tmp_path, "f.zarr")
    guard = RecordingGuard(stop_at=0)
    with pytest.raises(PatchworkError, match="stopped before the disk fills"):
        fill(store, paths, guard)
    assert guard.calls == [(0, 16)]
    status = store.status()
    assert (status[:16] == DONE).all() and (status[16:] == PENDING).all()


def test_an_error_in_the_caller_stops_the_writer_after_the_chunk_it_is_writing(tmp_path):
    store, paths = new_store(tmp_path, "f.zarr")
    with pytest.raises(RuntimeError, match="engine broke"):
        with chunks.ChunkWriter(store) as writer:
            maps = np.zeros((16, *ROW_SHAPE), np.float16)
            writer.write(0, (maps, np.full(16, DONE, np.uint8), [""] * 16, None), 16)
            raise RuntimeError("engine broke")
    assert not writer.thread.is_alive()
    assert set(store.status()[16:].tolist()) == {PENDING}
