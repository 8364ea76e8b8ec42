"""A million images on a laptop: the reduced copies that keep sampling's memory flat, the default
head that fits the features it finds, and what extract --from-npy says it did."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from builders import Cli, cluster_project, feature_project

from patchwork_cli.sampling.geometry import BLOCK_CELLS
from patchwork_cli.sampling.sample import sample
from patchwork_cli.store import runs
from patchwork_cli.store.features import AXES_NAME, REDUCED_NAME, FeatureStore
from patchwork_cli.store.project import Project
from patchwork_cli.util.projection import REDUCED_WIDTH, unit_rows


def structured(rows: int, width: int, seed: int = 0, rank: int = 12) -> np.ndarray:
    """Non-negative rows near a `rank`-dimensional subspace (like pooled ReLU features): their
    distances survive a projection on a few principal axes."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, rank)).astype(np.float32) + 3 * rng.integers(0, 2, (rows, 1))
    mixing = rng.normal(size=(rank, width)).astype(np.float32)
    return np.maximum(latent @ mixing, 0) + 0.01 * rng.random((rows, width), dtype=np.float32)


def npy_project(root: Path, features: np.ndarray, *, labelled: int = 60, task: str = "multiclass") -> Path:
    """A project `proj` over `features` (imported --from-npy), 3 classes, the first `labelled` rows
    labelled by the sign of feature 0 against its median (the last third of them validation)."""
    rows = len(features)
    (root / "list.txt").write_text("\n".join(f"img/{i:07d}.png" for i in range(rows)) + "\n")
    cli = Cli(root)
    cli("init", "proj", "--images", "list.txt", "--classes", "a,b,c", "--task", task)
    project = root / "proj"
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["training"].update(epochs=2, batches_per_epoch=5, batch_size=16)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    np.save(root / "features.npy", features)
    cli("--project", "proj", "extract", "--from-npy", "features.npy")
    flat = features.reshape(rows, -1)[:labelled, 0]
    truth = np.digitize(flat, np.quantile(flat, [1 / 3, 2 / 3]))
    edits = pd.DataFrame(np.eye(3, dtype=int)[truth], columns=["a", "b", "c"])
    edits.insert(0, "filepath", [f"img/{i:07d}.png" for i in range(labelled)])
    edits["validation"] = np.arange(labelled) >= 2 * labelled // 3
    edits.to_csv(root / "edits.csv", index=False)
    cli("--project", "proj", "label", "--import", "edits.csv")
    return project


def store_of(project: Path) -> FeatureStore:
    return FeatureStore.open(project / "features.zarr")


def pairwise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    squared = (x * x).sum(axis=1)
    return np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0))


# --- what extract --from-npy says ------------------------------------------------------------


def test_an_import_says_it_imported_rows_and_names_no_engine(tmp_path):
    project, _ = feature_project(tmp_path)
    result = Cli(tmp_path)("--project", "proj", "extract", "--from-npy", "proj/features.npy", "--json")
    assert "imported 120 feature row(s) from proj/features.npy in" in result.stderr
    assert "store: 120 done, 0 failed, 0 pending" in result.stderr
    assert " on keras" not in result.stderr and "extracted" not in result.stderr
    report = json.loads(result.stdout)
    assert (report["runtime"], report["precision"], report["processed"]) == ("none", "none", 120)


# --- the store's reduced copy ----------------------------------------------------------------


def test_an_import_writes_the_reduced_copy_with_every_chunk(tmp_path):
    features = structured(3000, 200)
    features[7] = np.nan  # a failed row: no reduced value
    project = npy_project(tmp_path, features)
    store = store_of(project)
    axes = store.axes()
    assert axes.shape == (200, REDUCED_WIDTH) and store.group.attrs[AXES_NAME] is True
    reduced = store.group[REDUCED_NAME][:]
    assert reduced.shape == (3000, REDUCED_WIDTH) and store.group[REDUCED_NAME].chunks[0] == store.chunk_rows
    assert np.isnan(reduced[7]).all() and not np.isnan(np.delete(reduced, 7, axis=0)).any()
    pooled = np.asarray(store.pooled[:], dtype=np.float32)
    np.testing.assert_allclose(reduced[:7], unit_rows(pooled[:7]) @ axes, rtol=1e-5, atol=1e-6)
    # 128 of 200 axes keep the distances of rows near a 12-d subspace, to about a percent
    sample = np.arange(0, 3000, 37)
    np.testing.assert_allclose(pairwise(reduced[sample]), pairwise(unit_rows(pooled[sample])), rtol=0.02, atol=0.01)


def test_narrow_features_are_rotated_not_cut(tmp_path):
    features = structured(500, 16)
    store = store_of(npy_project(tmp_path, features))
    assert store.axes().shape == (16, 16)
    reduced = store.reduced_rows(np.arange(500))
    pooled = unit_rows(np.asarray(store.pooled[:], dtype=np.float32))
    np.testing.assert_allclose(pairwise(reduced), pairwise(pooled), atol=1e-4)


def test_rows_written_without_the_axes_are_projected_by_readers_and_by_the_next_extract(tmp_path):
    project = npy_project(tmp_path, structured(5000, 160))
    store = store_of(project)
    expected = store.reduced_rows(np.arange(5000))
    # as a process that opened the store before its axes existed would leave a chunk: not projected
    writable = FeatureStore.open(project / "features.zarr", writable=True)
    writable.group[REDUCED_NAME][: store.chunk_rows] = np.nan
    np.testing.assert_allclose(store_of(project).reduced_rows(np.arange(5000)), expected, rtol=1e-5, atol=1e-6)
    writable.update_reduced()
    np.testing.assert_allclose(writable.group[REDUCED_NAME][:], expected, rtol=1e-5, atol=1e-6)


def test_a_store_without_axes_is_reduced_on_the_fly_and_nothing_is_written(tmp_path):
    project = npy_project(tmp_path, structured(2000, 300))
    group = zarr.open_group(str(project / "features.zarr"), mode="r+")
    del group.attrs[AXES_NAME]  # a store written before stores kept a reduced copy
    del group[REDUCED_NAME]
    before = sorted(p.name for p in (project / "features.zarr").iterdir())
    reduced = store_of(project).reduced_rows(np.arange(0, 2000, 3))
    assert reduced.shape == (667, REDUCED_WIDTH) and not np.isnan(reduced).any()
    assert sorted(p.name for p in (project / "features.zarr").iterdir()) == before
    pooled = unit_rows(np.asarray(store_of(project).pooled[::3], dtype=np.float32))
    sample = np.arange(0, 667, 11)
    np.testing.assert_allclose(pairwise(reduced[sample]), pairwise(pooled[sample]), rtol=0.02, atol=0.01)


# --- memory that does not grow with the rows' width --------------------------------------------

ROWS, WIDTH = 200_000, 512
FULL_COPY = ROWS * WIDTH * 4  # one float32 copy of every row's features: 410 MB
# The distance blocks the selections compute in (geometry.BLOCK_CELLS float32 cells each, a few at
# once): a fixed 256 MiB whatever the rows, where a copy of the features grows with them.
BLOCKS = 4 * BLOCK_CELLS * 4
# Before the reduced copies, each of these strategies held two float32 copies of every candidate's
# features or embeddings (2 x FULL_COPY here, 10 GB at a million 1280-d rows) beside the blocks; now
# at most a reduced copy (a quarter of one) and its own projections.
BOUND = 0.45 * FULL_COPY + BLOCKS


@pytest.fixture(scope="module")
def wide_project(tmp_path_factory) -> Path:
    return npy_project(tmp_path_factory.mktemp("wide"), structured(ROWS, WIDTH).astype(np.float16), labelled=300)


def sample_with_peak(project: Project, strategy: str) -> tuple[pd.DataFrame, int]:
    """sample -n 100 with `strategy`, and the peak of Python-tracked allocations (numpy's included) meanwhile."""
    tracemalloc.start()
    try:
        picks = sample(project, 100, strategy=strategy, seed=0)
        return picks, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["typiclust", "probcover"])
def test_coverage_strategies_hold_the_reduced_copy_not_the_features(wide_project, strategy):
    picks, peak = sample_with_peak(Project(wide_project), strategy)
    assert len(picks) == 100 and picks["row"].is_unique
    assert peak < BOUND, f"{strategy} peaked at {peak / 2**20:.0f} MiB"


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_run_stores_wide_embeddings_on_its_principal_axes_and_badge_reads_them(wide_project):
    """A 512-d head embedding is stored on 128 axes: a quarter of the bytes for sampling to read."""
    result = Cli(wide_project)("train")
    assert "(head auto: flatten, for vector features)" in result.stderr
    run_dir = runs.resolve_run(wide_project, None)
    assert runs.RunRecord.read(run_dir).head == "flatten"
    assert np.load(run_dir / runs.EMBEDDING_AXES_FILE).shape == (WIDTH, REDUCED_WIDTH)
    embeddings = zarr.open_array(str(run_dir / runs.EMBEDDINGS_NAME), mode="r")
    assert embeddings.shape == (ROWS, REDUCED_WIDTH)
    project = Project(wide_project)
    for strategy in ("badge", "cluster-margin", "coreset"):
        picks, peak = sample_with_peak(project, strategy)
        assert len(picks) == 100 and picks["row"].is_unique
        assert peak < BOUND, f"{strategy} peaked at {peak / 2**20:.0f} MiB"


# --- the default head fits the features ------------------------------------------------------


@pytest.mark.tensorflow
def test_the_default_head_on_vectors_is_a_linear_head_and_train_says_so(tmp_path):
    project, _ = cluster_project(tmp_path)
    assert yaml.safe_load((project / "patchwork.yaml").read_text())["model"]["head"] == "auto"
    result = Cli(project)("train")
    assert "(head auto: flatten, for vector features)" in result.stderr
    run_dir = runs.resolve_run(project, None)
    assert runs.RunRecord.read(run_dir).head == "flatten"
    assert yaml.safe_load((run_dir / runs.CONFIG_FILE).read_text())["model"]["head"] == "flatten"
    # the head as asked is what --if-changed compares: nothing changed, nothing to do
    assert "nothing to do" in Cli(project)("train", "--if-changed").stderr


@pytest.mark.tensorflow
def test_the_default_head_on_maps_pools_them(tmp_path):
    maps = np.random.default_rng(0).random((90, 2, 2, 8)).astype(np.float32)
    project = npy_project(tmp_path, maps, labelled=45)
    result = Cli(project)("train")
    assert "(head auto: pool:avg, for feature maps)" in result.stderr
    assert runs.RunRecord.read(runs.resolve_run(project, None)).head == "pool:avg"


@pytest.mark.tensorflow
def test_a_head_named_by_the_person_is_not_mentioned_and_still_checked(tmp_path):
    project, _ = cluster_project(tmp_path, head="pool:avg")
    result = Cli(project)("train", expect=1)
    assert "head 'pool:avg' needs feature maps" in result.stderr
    result = Cli(project)("train", "--head", "mlp:8")
    assert "head auto" not in result.stderr and "trained run" in result.stderr


def test_the_status_copy_is_the_array_and_follows_every_chunk_written(tmp_path, monkeypatch):
    from patchwork_cli.store import status_copy

    monkeypatch.setattr(status_copy, "MIN_CHUNKS", 1)
    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    array = group.create_array("status", shape=(40,), chunks=(8,), dtype="u1", fill_value=0)
    array[:16] = 1
    copy = tmp_path / "s.zarr" / "status" / status_copy.COPY_NAME
    assert status_copy.read_status(array).tolist() == [1] * 16 + [0] * 24
    assert copy.is_file()  # written by the first read
    array[8:16] = 2  # one chunk rewritten (same size on disk: only its inode and time tell)
    assert status_copy.read_status(array).tolist() == [1] * 8 + [2] * 8 + [0] * 24
    array[32:40] = 1  # a chunk that held no file yet
    assert status_copy.read_status(array)[32:].tolist() == [1] * 8
    array.resize((48,))  # the array's own zarr.json changes
    assert len(status_copy.read_status(array)) == 48
    copy.write_bytes(b"not a copy")  # a broken copy is ignored and replaced
    assert status_copy.read_status(array).tolist() == array[:].tolist()


def test_the_status_copy_is_never_used_for_a_chunk_written_after_its_key(tmp_path, monkeypatch):
    """The key is taken before the read: a chunk written in between is read again next time."""
    from patchwork_cli.store import status_copy

    monkeypatch.setattr(status_copy, "MIN_CHUNKS", 1)
    array = zarr.open_group(tmp_path / "s.zarr", mode="w").create_array("status", shape=(16,), chunks=(8,), dtype="u1")
    taken = status_copy._files_key

    def key_then_write(directory):
        key = taken(directory)
        array[:8] = 1  # lands between the key and the read
        return key

    monkeypatch.setattr(status_copy, "_files_key", key_then_write)
    status_copy.read_status(array)
    monkeypatch.setattr(status_copy, "_files_key", taken)
    assert status_copy.read_status(array)[:8].tolist() == [1] * 8


def test_a_label_tables_filepaths_digest_in_arrow_as_a_list_of_them_does(tmp_path):
    from patchwork_cli.store.label_table import FILEPATH_DTYPE, filepath_column
    from patchwork_cli.store.rowindex import DIGEST_SLICE, rows_digest

    paths = [f"img/{i}-é.png" for i in range(2 * DIGEST_SLICE + 3)]
    column = filepath_column(paths)
    assert column.dtype == FILEPATH_DTYPE
    for count in (0, 1, DIGEST_SLICE, DIGEST_SLICE + 1, len(paths)):
        assert rows_digest(column[:count]) == rows_digest(paths[:count])
