"""The label store: table format, journal durability, replay, compaction and its crash windows."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store import label_cache, label_table
from patchwork_cli.store.journal import Journal, LabelStore, apply_edits, make_edit
from patchwork_cli.store.label_table import empty_table, read_label_table, write_label_table
from patchwork_cli.store.project import init_project, open_project

CLASSES = ["cat", "dog"]


def store_with_rows(directory: Path, count: int = 5) -> LabelStore:
    store = LabelStore(directory, CLASSES)
    write_label_table(empty_table(CLASSES, [f"img{i}.png" for i in range(count)]), store.csv_path, CLASSES)
    return store


def test_table_round_trip_in_the_original_format(tmp_path):
    table = empty_table(CLASSES, ["a.png", "b.png", "c.png"])
    table.loc[0, "cat"] = 1
    table.loc[1, ["cat", "dog"]] = [0, 1]
    table.loc[2, "exclude"] = True
    table.loc[1, "subset"] = "site A"
    path = tmp_path / "labels.csv"
    write_label_table(table, path, CLASSES)
    assert path.read_text().splitlines() == [
        "filepath,exclude,validation,subset,cat,dog",
        "a.png,False,False,,1,",
        "b.png,False,False,site A,0,1",
        "c.png,True,False,,,",
    ]
    back = read_label_table(path, CLASSES)
    pd.testing.assert_frame_equal(back, table)
    assert back["cat"].dtype == np.float64 and np.isnan(back.loc[2, "cat"])


def test_original_tables_with_float_cells_and_lowercase_flags_are_read(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("filepath,cat,exclude\nx.png,1.0,true\ny.png,,0\n")
    table = read_label_table(path)
    assert list(table.columns) == ["filepath", "exclude", "validation", "subset", "cat"]
    assert table["cat"].tolist()[0] == 1.0 and np.isnan(table["cat"].tolist()[1])
    assert table["exclude"].tolist() == [True, False]
    assert table["validation"].tolist() == [False, False]


@pytest.mark.parametrize(
    "content, message",
    [
        ("filepath,cat,dog\na.png,1,\nb.png,2,0\n", "line 3, column 'cat': expected empty, 0 or 1, got 2"),
        ("filepath,cat,dog\na.png,yes,\n", "line 2, column 'cat': expected empty, 0 or 1, got 'yes'"),
        ("filepath,cat,dog,exclude\na.png,1,0,maybe\n", "line 2, column 'exclude': expected True or False"),
        ("filepath,cat,dog\na.png,1,0\nb.png,,\na.png,0,0\n", "line 4: filepath 'a.png' already appears on line 2"),
        ("path,cat,dog\na.png,1,0\n", "line 1: no 'filepath' column"),
        ("filepath,cat,cat\na.png,1,0\n", "column 'cat' appears more than once"),
        ("filepath,cat,dog,cow\na.png,1,0,1\n", "column 'cow' is not a class"),
        ("filepath,cat\na.png,1\n", "class column 'dog' is missing"),
        ("filepath,cat,dog\n,1,0\n", "line 2: empty filepath"),
        ("filepath,cat,dog\na.png,1,0,7,8\n", "malformed CSV"),
        ("", "empty file"),
    ],
)
def test_bad_tables_are_refused_naming_file_line_and_column(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(PatchworkError) as error:
        read_label_table(path, CLASSES)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))


def test_non_utf8_table_is_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("filepath,cat,dog\ncaf\xe9.png,1,0\n".encode("latin-1"))
    with pytest.raises(PatchworkError, match="not UTF-8"):
        read_label_table(path, CLASSES)


def test_make_edit_validates_values():
    record = make_edit("a.png", {"cat": 1, "dog": None, "exclude": True, "subset": "x"}, CLASSES, seconds=2.5)
    assert record["set"] == {"cat": 1, "dog": None, "exclude": True, "subset": "x"}
    assert record["seconds"] == 2.5 and record["time"].endswith("+00:00")
    for fields, message in [
        ({"cat": 2}, "cat: expected 0, 1 or None, got 2"),
        ({"cat": True}, "cat: expected 0, 1 or None"),
        ({"exclude": 1}, "exclude: expected True or False"),
        ({"cow": 1}, "unknown label field 'cow'"),
    ]:
        with pytest.raises(PatchworkError, match=message):
            make_edit("a.png", fields, CLASSES)


def test_replay_applies_in_order_last_write_wins():
    table = empty_table(CLASSES, ["a", "b"])
    records = [
        make_edit("a", {"cat": 1}, CLASSES),
        make_edit("b", {"dog": 0, "validation": True}, CLASSES),
        make_edit("a", {"cat": 0, "dog": 1}, CLASSES),
        make_edit("a", {"cat": None}, CLASSES),
    ]
    out = apply_edits(table, records, CLASSES)
    assert np.isnan(out.loc[0, "cat"]) and out.loc[0, "dog"] == 1
    assert out.loc[1, "dog"] == 0 and bool(out.loc[1, "validation"])
    assert np.isnan(table.loc[0, "dog"]), "replay must not modify its input"
    pd.testing.assert_frame_equal(apply_edits(out, records, CLASSES), out)  # idempotent


def test_edits_are_visible_to_readers_before_compaction(tmp_path):
    store = store_with_rows(tmp_path)
    store.edit([make_edit("img1.png", {"cat": 1}, CLASSES)])
    assert store.read().loc[1, "cat"] == 1
    assert read_label_table(store.csv_path, CLASSES).loc[1, "cat"] != 1  # still only in the journal
    store.compact()
    assert read_label_table(store.csv_path, CLASSES).loc[1, "cat"] == 1
    assert store.journal.path.read_bytes() == b""


def test_torn_last_journal_line_is_ignored_with_a_warning(tmp_path, caplog):
    store = store_with_rows(tmp_path)
    store.edit([make_edit("img0.png", {"cat": 1}, CLASSES)])
    with open(store.journal.path, "ab") as handle:  # a crash mid-write: half a line, no newline
        handle.write(b'{"time":"2026-01-01","filepath":"img1.png","set":{"ca')
    table = store.read()
    assert table.loc[0, "cat"] == 1 and np.isnan(table.loc[1, "cat"])
    assert "line 2 is incomplete" in caplog.text
    # The next append starts on a fresh line, so the torn fragment cannot swallow it.
    store.edit([make_edit("img2.png", {"dog": 0}, CLASSES)])
    assert store.read().loc[2, "dog"] == 0
    assert store.compact().loc[2, "dog"] == 0


def test_crash_between_replace_and_truncation_loses_nothing(tmp_path):
    store = store_with_rows(tmp_path)
    store.edit([make_edit("img0.png", {"cat": 1}, CLASSES), make_edit("img0.png", {"cat": 0, "dog": 1}, CLASSES)])
    store.edit([make_edit("img3.png", {"exclude": True}, CLASSES)])
    expected = store.read()
    # Compaction's first half only: the new labels.csv is in place, the journal not yet truncated.
    folded = apply_edits(read_label_table(store.csv_path, CLASSES), store.journal.read(), CLASSES)
    write_label_table(folded, store.csv_path, CLASSES)
    assert store.journal.read(), "journal still holds the folded edits"
    pd.testing.assert_frame_equal(store.read(), expected)  # replaying them again changes nothing
    pd.testing.assert_frame_equal(store.compact(), expected)
    pd.testing.assert_frame_equal(read_label_table(store.csv_path, CLASSES), expected)


def test_a_failed_rewrite_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    store = store_with_rows(tmp_path)
    before = store.csv_path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_label_table(empty_table(CLASSES, ["x.png"]), store.csv_path, CLASSES)
    assert store.csv_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def _append_many(directory: str, worker: int, count: int) -> None:
    store = LabelStore(Path(directory), CLASSES)
    for i in range(count):
        store.edit([make_edit(f"img{i}.png", {CLASSES[worker]: i % 2}, CLASSES, seconds=float(worker))])


@pytest.mark.slow
def test_two_processes_appending_at_once_lose_no_edit(tmp_path):
    count = 300
    store = store_with_rows(tmp_path, count)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w, count)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    lines = store.journal.path.read_text().splitlines()
    assert len(lines) == 2 * count and all(json.loads(line) for line in lines)
    table = store.compact()
    expected = np.arange(count) % 2
    assert (table["cat"].to_numpy() == expected).all() and (table["dog"].to_numpy() == expected).all()


def test_journal_records_are_one_json_object_per_line(tmp_path):
    journal = Journal(tmp_path / "labels.journal")
    journal.append([make_edit("a b/ü.png", {"cat": 1}, CLASSES, seconds=1.25)])
    (line,) = journal.path.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert set(record) == {"time", "filepath", "set", "seconds"}
    assert record["filepath"] == "a b/ü.png" and record["set"] == {"cat": 1} and record["seconds"] == 1.25


def test_python_api_for_notebook_users(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    project, _ = init_project(tmp_path / "p", images=[str(tmp_path / "a.png")], classes=CLASSES)
    project.label(str(tmp_path / "a.png"), cat=1, dog=0, seconds=3.0)
    df = open_project(tmp_path / "p").labels()
    assert df.loc[0, "cat"] == 1 and df.loc[0, "dog"] == 0
    assert list(df.columns) == ["filepath", "exclude", "validation", "subset", "cat", "dog"]


def test_rewrites_keep_the_file_mode(tmp_path):
    path = tmp_path / "labels.csv"
    write_label_table(empty_table(CLASSES, ["a.png"]), path, CLASSES)
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    path.chmod(0o640)
    write_label_table(empty_table(CLASSES, ["b.png"]), path, CLASSES)
    assert path.stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "content",
    [
        "filepath,exclude,validation,subset,cat,dog\na.png,False,True,site A,1,\nb.png,True,False,,0,1\n",
        '\ufefffilepath,cat,dog\r\n"x, y.png",1.0,0.0\r\nNA,,\r\n',  # BOM, CRLF, a quoted comma, 'NA' as a path
        "filepath,dog,exclude\nz.png,1,true\nw.png,,0\n",  # some columns missing, lowercase flags
        "filepath,cat,dog,exclude\na.png,1,0, yes\n",  # a flag with a space: the careful flag parser
        "filepath,cat,dog\na.png, 1,0\n",  # a space in a class cell: Arrow refuses, pandas reads it
        "filepath,cat,dog\n",  # no rows
        "filepath, cat,dog\nx.png,1,0\n",  # a spaced header name: the class is still "cat"
    ],
)
def test_the_fast_reader_gives_what_the_careful_reader_gives(tmp_path, monkeypatch, content):
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    fast = read_label_table(path, CLASSES, allow_missing_classes=True)
    monkeypatch.setattr(label_table, "_read_well_formed", lambda *args: None)
    pd.testing.assert_frame_equal(fast, read_label_table(path, CLASSES, allow_missing_classes=True))


def test_a_well_formed_table_takes_the_fast_path(tmp_path, monkeypatch):
    path = tmp_path / "labels.csv"
    write_label_table(empty_table(CLASSES, ["a.png", "b.png"]), path, CLASSES)
    monkeypatch.setattr(label_table, "read_csv", None)  # the careful reader would fail if called
    assert read_label_table(path, CLASSES)["filepath"].tolist() == ["a.png", "b.png"]


def test_the_careful_reader_keeps_labels_under_a_spaced_header(tmp_path, monkeypatch):
    path = tmp_path / "labels.csv"
    path.write_text("filepath, cat,dog\nx.png,1,0\ny.png, 0,1\n", encoding="utf-8")
    monkeypatch.setattr(label_table, "_read_well_formed", lambda *args: None)
    table = read_label_table(path, CLASSES)
    assert table["cat"].tolist() == [1.0, 0.0] and table["dog"].tolist() == [0.0, 1.0]


# --- the parsed copy of a big labels.csv ---------------------------------------------------


@pytest.fixture
def cached_project(tmp_path, monkeypatch):
    """A project whose labels.csv is big enough to be cached (the threshold lowered to 1)."""
    monkeypatch.setattr(label_cache, "CACHE_MIN_ROWS", 1)
    directory = tmp_path / "p"
    init_project(directory, images=["a.png", "b.png", "c.png"], classes=CLASSES, cwd=tmp_path)
    project = open_project(directory)
    a, b, _ = project.labels()["filepath"]
    project.edit_labels([(a, {"cat": 1, "dog": 0, "subset": "x"}), (b, {"dog": 1, "exclude": True})])
    project.compact()
    return project


def test_the_parsed_copy_reads_exactly_what_the_csv_holds(cached_project):
    csv_path = cached_project.directory / "labels.csv"
    parsed = read_label_table(csv_path, CLASSES)
    first = label_cache.read_label_table_cached(csv_path, CLASSES)  # parses, then writes the copy
    assert (cached_project.directory / label_cache.CACHE_NAME).is_file()
    second = label_cache.read_label_table_cached(csv_path, CLASSES)  # from the copy
    pd.testing.assert_frame_equal(first, parsed)
    pd.testing.assert_frame_equal(second, parsed)


def test_the_parsed_copy_is_never_used_once_labels_csv_changes(cached_project):
    csv_path = cached_project.directory / "labels.csv"
    assert cached_project.labels()["cat"].tolist()[0] == 1  # the copy is written
    cached_project.label(cached_project.labels()["filepath"][0], cat=0)
    cached_project.compact()  # labels.csv replaced: a new file
    assert cached_project.labels()["cat"].tolist()[0] == 0
    # an edit by hand that keeps the size: only the modification time tells
    text = csv_path.read_text()
    assert "a.png,False,False,x,0,0" in text
    csv_path.write_text(text.replace("a.png,False,False,x,0,0", "a.png,False,False,x,1,0"))
    assert cached_project.labels()["cat"].tolist()[0] == 1


def test_a_copy_of_another_format_is_never_read(cached_project, monkeypatch):
    """After an upgrade that changes the copy's layout (or the table's fixed columns), the old copy
    is parsed again, not served: its key holds the format."""
    expected = cached_project.labels()  # writes the copy
    cache = cached_project.directory / label_cache.CACHE_NAME
    written = cache.stat().st_mtime_ns
    pd.testing.assert_frame_equal(cached_project.labels(), expected)
    assert cache.stat().st_mtime_ns == written  # read from the copy: not written again
    monkeypatch.setattr(label_cache, "CACHE_FORMAT", label_cache.CACHE_FORMAT + 1)
    pd.testing.assert_frame_equal(cached_project.labels(), expected)
    assert cache.stat().st_mtime_ns != written  # parsed again, and a copy of the new format written


def test_a_broken_parsed_copy_is_ignored(cached_project):
    expected = cached_project.labels()
    (cached_project.directory / label_cache.CACHE_NAME).write_bytes(b"not arrow")
    pd.testing.assert_frame_equal(cached_project.labels(), expected)


def test_small_tables_are_not_copied(tmp_path):
    init_project(tmp_path / "p", images=["a.png"], classes=CLASSES, cwd=tmp_path)
    open_project(tmp_path / "p").labels()
    assert not (tmp_path / "p" / label_cache.CACHE_NAME).exists()
