"""patchwork extract: every image of the project through the extractor into features.zarr.

Resumable (only pending rows are worked on), incremental (rows appended by `add`
are pending), shardable (shard K of N owns every N-th chunk) and reproducible: rows
go through the model in fixed-size, zero-padded batches, so a row's features do not
depend on which other rows shared its batch, and a resumed or sharded run writes
exactly what one uninterrupted run writes. Images are decoded on a thread pool ahead
of the model so inference never waits for them. TensorFlow is imported only when a
model is really needed (not for --from-npy). The model runs on the runtime the config
asks for (extractors/runtimes.py: LiteRT, OpenVINO or Keras), which releases the GIL,
so the decoding threads go on while it computes. Before the disk fills, extraction
stops (see diskspace.py). With a Dask cluster, each pending chunk becomes a task that
runs `extract_chunk` (chunks.py) on a worker (on_cluster.py).
"""

from __future__ import annotations

import csv
import errno
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extraction.chunks import fill_chunks
from patchwork_cli.extraction.diskspace import DiskGuard, disk_full_message
from patchwork_cli.store.changed_images import add_to_review, scan_changes
from patchwork_cli.store.features import FAILED, PENDING, FeatureStore, identity_difference, normalised_identity
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.project import FAILURES_NAME, Project
from patchwork_cli.store.rowindex import NO_ROW, RowMatch
from patchwork_cli.util.atomic import atomic_write
from patchwork_cli.util.image_files import read_image_file
from patchwork_cli.util.locking import project_lock


@dataclass
class ExtractReport:
    processed: int
    failed_now: int
    seconds: float
    counts: dict
    extractor: str
    runtime: str = "keras"
    precision: str = "exact"
    note: str = ""  # what the runtime gave up to run here (runtimes.RuntimeChoice)
    changed: int = 0  # images whose content changed since extraction, extracted again
    to_review: int = 0  # of them, those holding labels: listed in changed-images.txt

    def as_dict(self) -> dict:
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        return {
            "processed": self.processed,
            "failed_now": self.failed_now,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(rate, 2),
            "extractor": self.extractor,
            "runtime": self.runtime,
            "precision": self.precision,
            "note": self.note,
            "changed": self.changed,
            "to_review": self.to_review,
            **self.counts,
        }


def parse_shard(text: str | None) -> tuple[int, int]:
    """'K/N' -> (K, N), shard K (1-based) of N; None -> the whole store (1, 1)."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise PatchworkError(f"--shard: expected K/N such as 2/8, got {text!r}") from None
    if not 1 <= k <= n:
        raise PatchworkError(f"--shard: K must be between 1 and N, got {text!r}")
    return k, n


def extract(
    project: Project,
    *,
    model: str | None = None,
    shard: tuple[int, int] = (1, 1),
    overwrite: bool = False,
    retry_failed: bool = False,
    progress: bool | None = None,
    client=None,
) -> ExtractReport:
    """Extract the pending rows of this shard (and its failed ones with `retry_failed`).

    With `client` (a dask.distributed.Client) the chunks run as tasks on its cluster instead
    of in this process; the store is prepared, and the report written, here either way.
    """
    from patchwork_cli.extractors.loading import load_extractor  # TensorFlow starts here
    from patchwork_cli.extractors.runtimes import choose_runtime, open_extractor_engine

    settings = project.config.extractor
    table = project.labels()
    table_filepaths = table[FILEPATH].tolist()
    name = model or settings.name
    extractor = load_extractor(name, tuple(project.config.imshape), settings.pooling, base=project.directory)
    choice = choose_runtime(settings.runtime, settings.precision)  # the one decision, reported below
    identity = extractor.identity(settings.dtype, choice.precision)
    store, match = prepare_store(
        project, table_filepaths, extractor.output_shape, settings.dtype, identity, overwrite, image_records=True
    )
    paths = _paths_to_extract(project, store, match)
    changed, to_review = _mark_changed(project, store, match, paths, shard, table)
    if retry_failed:
        store.retry_failed(_shard_chunks(store, shard, _to_do(store, paths, FAILED)))
    to_do = _to_do(store, paths)
    chunks = _shard_chunks(store, shard, to_do)

    started = time.perf_counter()
    if client is None:
        engine = open_extractor_engine(extractor, choice, settings.batch_size)
        status = store.status()
        started = time.perf_counter()  # the rate is extraction's, not the engine's compilation's
        try:
            processed, failed = fill_chunks(
                store,
                {c: status[slice(*store.chunk_bounds(c))] for c in chunks},
                lambda row: paths[row] if row < len(paths) else None,
                lambda path: read_image_file(path, extractor.imshape, extractor.channels),
                engine,
                progress,
                DiskGuard.for_store(project.features_location, store, len(chunks)),
            )
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise PatchworkError(disk_full_message(project.features_location)) from None
    else:
        from patchwork_cli.extraction.on_cluster import ExtractorSpec, extract_on_cluster

        spec = ExtractorSpec.of(project, name, choice)
        pending = sum(int(to_do[slice(*store.chunk_bounds(c))].sum()) for c in chunks)
        processed, failed = extract_on_cluster(
            client, project.features_location, chunks, pending, paths, spec, progress
        )
    seconds = time.perf_counter() - started
    write_failures_csv(project.directory, store, match, table_filepaths)
    if not _to_do(store, paths).any():  # the last of the shards to finish: the reduced copy catches up
        with project_lock(project.directory, exclusive=True):
            store.update_reduced()
    return ExtractReport(
        processed,
        failed,
        seconds,
        store.counts(match),
        identity["name"],
        choice.runtime,
        choice.precision,
        choice.note,
        changed,
        to_review,
    )


def _mark_changed(project: Project, store: FeatureStore, match: RowMatch, paths: list, shard, table) -> tuple[int, int]:
    """Mark pending the rows of this shard whose image changed since it was extracted (so this run
    extracts them again), record the new mtime of files merely touched, and list the changed images
    that hold labels for review (changed_images.py). Returns (changed, listed for review)."""
    k, n = shard
    rows = np.flatnonzero([path is not None for path in paths])
    rows = rows[(rows // store.chunk_rows) % n == k - 1]
    scan = scan_changes(store, rows, paths.__getitem__)
    if not len(scan.changed) and not len(scan.touched):
        return 0, 0
    with project_lock(project.directory, exclusive=True):
        if len(scan.touched):
            store.write_signatures(scan.touched, scan.touched_signatures)
        store.mark_pending(scan.changed)
        table_rows = match.table_rows_of_store(scan.changed)
        classes = table[project.classes].iloc[table_rows]
        labelled = table[FILEPATH].iloc[table_rows][classes.notna().any(axis=1).to_numpy()].tolist()
        if labelled:
            add_to_review(project.directory, labelled, project.store.journal)
    return len(scan.changed), len(labelled)


def _paths_to_extract(project: Project, store: FeatureStore, match: RowMatch) -> list[str | None]:
    """The image file of each store row that a labels.csv row takes; None for the rest (images
    deleted from labels.csv by hand are not extracted)."""
    taken = match.taken()
    filepaths = store.filepaths() if store.record is not None else []
    paths: list[str | None] = [None] * store.rows
    for row in np.flatnonzero(taken):
        paths[row] = project.absolute_path(filepaths[row])
    return paths


def prepare_store(
    project: Project,
    filepaths: list[str],
    row_shape: tuple[int, ...],
    dtype: str,
    identity: dict,
    overwrite: bool,
    fresh: bool = False,
    image_records: bool = False,
) -> tuple[FeatureStore, RowMatch]:
    """Open (or create) the feature store for this extractor and give every image of
    `filepaths` (labels.csv's column) a row; returns the store and where labels.csv's rows are in it.

    A store made by a different extractor is refused unless `overwrite`, which replaces
    it; that is idempotent, so every shard of a new extraction may pass it. `fresh` replaces
    any store. Images new to the store get rows at its end, wherever labels.csv has them.
    `image_records`: the store records each image file's signature and thumbnail (extraction
    from files, not an import of vectors).
    """
    location = project.features_location
    identity = normalised_identity(identity)  # as the store reads its own back
    with project_lock(project.directory, exclusive=True):
        store = FeatureStore.open(location, writable=True)
        if store is not None and store.identity != identity:
            if not overwrite:
                raise PatchworkError(
                    f"{project.config.storage.features} holds features from {store.identity.get('name')!r} "
                    f"({identity_difference(store.identity, identity, 'there')}); pass --overwrite to replace them"
                )
            store = None
        if store is None or fresh:
            store = FeatureStore.create(location, filepaths, row_shape, dtype, identity)
        elif store.record is None:
            _adopt_unrecorded(project, store, filepaths)
        if store.needs_pooled():
            store.build_pooled()  # once, for a store written before stores kept a pooled copy
        if image_records:
            store.ensure_image_records()
        match = store.match(filepaths, project.directory)
        new = np.flatnonzero(match.store_rows_of_table() == NO_ROW)
        if len(new):
            known = filepaths[: match.store_rows] if match.in_order else store.filepaths()
            store.append_images(known + [filepaths[row] for row in new])
            match = store.match(filepaths, project.directory)
    return store, match


def _adopt_unrecorded(project: Project, store: FeatureStore, filepaths: list[str]) -> None:
    """A store written before patchwork recorded its rows' images was meant to follow
    labels.csv row for row: record that, unless labels.csv now has fewer rows than the store,
    when which rows went can no longer be told."""
    if store.rows > len(filepaths):
        raise PatchworkError(
            f"{project.directory / 'labels.csv'} has {len(filepaths)} rows but "
            f"{project.config.storage.features} has {store.rows}, and that store predates the "
            "record of which image each row is, so rows deleted from labels.csv cannot be told apart: "
            "put the rows back (mark them exclude instead), or re-extract with 'patchwork extract --overwrite'"
        )
    store.record_filepaths(filepaths[: store.rows])


def write_failures_csv(directory: Path, store: FeatureStore, match: RowMatch, filepaths: list[str]) -> Path:
    """features_failures.csv beside the store: the labels.csv row, filepath and reason of every
    image whose extraction failed."""
    path = directory / FAILURES_NAME
    reasons = dict(store.failures())
    source = match.store_rows_of_table()
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["row", "filepath", "reason"])
        if reasons:
            writer.writerows(
                (row, filepaths[row], reasons[store_row])
                for row, store_row in enumerate(source.tolist())
                if store_row in reasons
            )
    return path


def _shard_chunks(store: FeatureStore, shard: tuple[int, int], to_do: np.ndarray) -> list[int]:
    """The chunks of shard K of N (every N-th, from the (K-1)-th) with rows `to_do` (see _to_do)."""
    k, n = shard
    chunks = range(k - 1, store.chunk_count, n)
    return [c for c in chunks if to_do[slice(*store.chunk_bounds(c))].any()]


def _to_do(store: FeatureStore, paths: list, holding: int = PENDING) -> np.ndarray:
    """(store rows,) bool: the rows in state `holding` that have an image to extract (`paths`, by store row)."""
    wanted = np.zeros(store.rows, bool)
    wanted[: len(paths)] = [path is not None for path in paths[: store.rows]]
    return (store.status() == holding) & wanted
