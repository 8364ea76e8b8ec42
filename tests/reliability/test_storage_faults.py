"""A full disk and a read-only project directory, on real file systems (a 1 MiB tmpfs and a
read-only bind mount): refused writes change nothing, and nothing is left half-done."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import zarr
from builders import Cli, snapshot

from patchwork_cli.store.features import FeatureStore
from patchwork_cli.store.project import Project
from reliability.builders import fill, report, storage_project

ROWS = 200


def one_error_line(result, *words):
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[-1] for word in words), lines[-1]


def leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.root
def test_full_disk_at_every_point_of_an_import_changes_nothing_or_everything(small_disk):
    directory = storage_project(small_disk)
    cli = Cli(small_disk)
    pristine = snapshot(directory)
    outcomes = collections.Counter()
    for free_kib in range(0, 128, 4):  # the disk fills up at a different point of the import each time
        (small_disk / "filler").unlink(missing_ok=True)
        for name, data in pristine.items():
            (directory / name).write_bytes(data)
        filler = fill(small_disk)
        os.truncate(filler, filler.stat().st_size - free_kib * 1024)
        before = snapshot(directory)
        result = cli("--project", "proj", "label", "--import", "edits.csv", expect=None)
        table = Project(directory).labels()
        whole = (table["a"] == 1).all() and (table["b"] == 0).all()
        assert whole or table["a"].isna().all(), "a partial import"
        assert not leftovers(directory)
        if result.exit_code == 0:
            assert whole
            outcomes["imported"] += 1
            break
        one_error_line(result, "No space left on device")
        if snapshot(directory) == before:
            one_error_line(result, "labels.journal")
            outcomes["refused, nothing changed"] += 1
        else:  # the edits are durable in the journal; only folding them into labels.csv failed
            one_error_line(result, "labels.csv")
            assert whole and (directory / "labels.csv").read_bytes() == before["labels.csv"]
            outcomes["journal kept, compaction refused"] += 1
    assert all(outcomes[k] for k in ("refused, nothing changed", "journal kept, compaction refused", "imported"))
    os.unlink(filler)
    cli("--project", "proj", "label", "--import", "edits.csv")
    assert (directory / "labels.journal").stat().st_size == 0
    report("full disk: label --import", attempts=sum(outcomes.values()), **outcomes)


@pytest.mark.root
def test_full_disk_add_and_extract_then_resume(small_disk):
    directory = storage_project(small_disk)
    cli = Cli(small_disk)
    filler = fill(small_disk)
    before = snapshot(directory)
    one_error_line(cli("--project", "proj", "add", "more.txt", expect=1), "labels.csv", "No space left on device")
    assert snapshot(directory) == before and not leftovers(directory)
    full = filler.stat().st_size
    outcomes = collections.Counter()
    for free_kib in range(0, 48, 4):  # runs out part-way through creating and filling features.zarr
        os.truncate(filler, full - free_kib * 1024)
        result = cli("--project", "proj", "extract", "--from-npy", "features.npy", expect=None)
        assert result.exit_code in (0, 1) and "Traceback" not in result.stderr
        outcomes["extract ran out of space" if result.exit_code else "extract completed"] += 1
        if result.exit_code == 0:
            break
        one_error_line(result, "No space left on device")
    os.unlink(filler)
    cli("--project", "proj", "extract", "--from-npy", "features.npy")
    store = zarr.open_group(str(directory / "features.zarr"), mode="r")
    np.testing.assert_array_equal(store["features"][:], np.load(small_disk / "features.npy").astype(np.float16))
    assert (store["status"][:] == 1).all()
    cli("--project", "proj", "add", "more.txt")
    assert len(Project(directory).labels()) == 2 * ROWS
    report("full disk: add, extract --from-npy", attempts=sum(outcomes.values()) + 1, **outcomes)


@pytest.mark.root
def test_read_only_project_reads_and_refuses_writes(tmp_path, read_only):
    directory = storage_project(tmp_path)
    cli = Cli(tmp_path)
    cli("--project", "proj", "label", "--import", "edits.csv")
    Project(directory).label("../img/0.png", a=0)  # a journal to replay on read
    before = snapshot(directory)
    read_only(directory)
    assert "images      200" in cli("--project", "proj", "status").stdout
    assert Project(directory).labels()["a"].tolist()[:2] == [0.0, 1.0]
    refused = {
        ("label", "--import", "edits.csv"): "labels.journal",
        ("add", "more.txt"): ".patchwork.lock",
        ("classes", "add", "c"): ".patchwork.lock",
        ("extract", "--from-npy", "features.npy"): ".patchwork.lock",
    }
    for args, name in refused.items():
        one_error_line(cli("--project", "proj", *args, expect=1), name, "Read-only file system")
    assert snapshot(directory) == before
    report("read-only project", commands_refused=len(refused), reads_that_worked=2)


def test_regression_a_store_cut_short_is_recreated_or_completed(tmp_path):
    """Found by the full-disk case: a features.zarr whose creation was cut short (group written,
    arrays not) made every later command fail with KeyError; a grow cut short between its arrays
    left status shorter than features."""
    directory = storage_project(tmp_path)
    cli = Cli(tmp_path)
    zarr.open_group(str(directory / "features.zarr"), mode="w").create_array("features", shape=(ROWS, 64), dtype="f2")
    assert "features    not extracted yet" in cli("--project", "proj", "status").stdout
    cli("--project", "proj", "extract", "--from-npy", "features.npy")
    cli("--project", "proj", "add", "more.txt")
    zarr.open_group(str(directory / "features.zarr"), mode="r+")["features"].resize((2 * ROWS, 64))
    assert "features    200 done, 0 failed, 200 pending" in cli("--project", "proj", "status").stdout
    filepaths = Project(directory).labels()["filepath"].tolist()
    FeatureStore.open(directory / "features.zarr", writable=True).append_images(filepaths)  # as the next extract does
    store = zarr.open_group(str(directory / "features.zarr"), mode="r")
    assert store["status"].shape == store["reason"].shape == (2 * ROWS,)
    assert "features    200 done, 0 failed, 200 pending" in cli("--project", "proj", "status").stdout
