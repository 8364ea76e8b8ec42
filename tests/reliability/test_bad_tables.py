"""Fuzzed bad input with hypothesis: random mutations of a valid patchwork.yaml, label tables and
import files with bad values, missing or unknown columns, duplicated paths and wrong encodings.

Every command must either work or refuse with one `error:` line naming the file (and the line
and column where there is one), exit 1, no traceback, and nothing changed on disk.
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from builders import Cli, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.config import load_config
from patchwork_cli.store.project import Project
from reliability.builders import report

EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
CLASSES = ["a", "b"]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "list.txt").write_text("".join(f"img/{i}.png\n" for i in range(6)))
    Cli(tmp_path)("init", "proj", "--images", "list.txt", "--classes", ",".join(CLASSES))
    (tmp_path / "new.txt").write_text("img/new.png\n")
    return tmp_path / "proj"


def assert_refused_or_fine(cli: Cli, args, directory, names: tuple[str, ...]):
    """Run a command: success, or exit 1 with one error line naming one of `names`; a refusal
    changes nothing on disk. Returns the result."""
    before = snapshot(directory)
    result = cli(*args, expect=None)
    assert result.exit_code in (0, 1), (args, result.exit_code, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
        assert any(name in lines[-1] for name in names), lines[-1]
        assert result.stdout == "" and snapshot(directory) == before, "a refused command changed the project"
    return result


# --- patchwork.yaml ----------------------------------------------------------------------

YAML_TOKENS = [
    ":", "-", "[", "]", "{", "}", "#", "&x", "*x", "!!str", "!!python/object:os.system", "|", ">", '"', "'",
    "\t", "\n", "  ", "%YAML 1.1", "\x00", "é", "\ufeff", "null", "~", ".nan", ".inf", "-.inf", "-1", "0",
    "1e309", "9" * 400, "true", "2026-01-01", "0x1F", "[]", "{}", "5.0", "'maxent:zz'", "pool:avg",
]  # fmt: skip


@st.composite
def mutated_config(draw, valid: str) -> bytes:
    """`valid` after one to three random line, character or byte mutations."""
    lines = valid.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "key", "indent", "drop", "duplicate", "insert", "slice"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if kind == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[i] = f"{key}: {draw(st.sampled_from(YAML_TOKENS))}\n"
        elif kind == "key" and line.strip():
            position = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:position] + draw(st.sampled_from(["", "x", "_", " "])) + line[position + 1 :]
        elif kind == "indent":
            lines[i] = draw(st.sampled_from(["", "  ", "    ", "\t"])) + line.lstrip(" ")
        elif kind == "drop":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "insert":
            lines.insert(i, "".join(draw(st.lists(st.sampled_from([*YAML_TOKENS, "a", "key"]), max_size=6))) + "\n")
        else:
            text = "".join(lines)
            start = draw(st.integers(0, len(text)))
            end = draw(st.integers(start, min(len(text), start + 40)))
            lines = (text[:start] + draw(st.sampled_from(YAML_TOKENS)) + text[end:]).splitlines(keepends=True)
        if not lines:
            lines = ["\n"]
    data = "".join(lines).encode()
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:  # now and then, bytes that are not UTF-8
        position = draw(st.integers(0, len(data)))
        data = data[:position] + bytes([draw(st.integers(0x80, 0xFF))]) + data[position:]
    return data


@pytest.mark.slow
def test_mutated_config_is_refused_clearly_or_valid(project):
    valid = (project / "patchwork.yaml").read_text()
    cli = Cli(project.parent)
    outcomes = collections.Counter()

    @FUZZ
    @given(mutated_config(valid))
    def check(data):
        (project / "patchwork.yaml").write_bytes(data)
        names = ("patchwork.yaml", "labels.csv")  # a changed class list makes labels.csv the one that disagrees
        fine = assert_refused_or_fine(cli, ["--project", "proj", "status"], project, names).exit_code == 0
        if fine:
            assert_usable(load_config(project / "patchwork.yaml"))
            (project.parent / "edits.csv").write_text("filepath,a\nimg/0.png,1\n")
            edit = ["--project", "proj", "label", "--import", "edits.csv"]
            assert assert_refused_or_fine(cli, edit, project, names).exit_code == 0
        outcomes["accepted" if fine else "refused"] += 1

    check()
    report("patchwork.yaml mutations (hypothesis)", examples=sum(outcomes.values()), **outcomes)


def assert_usable(config) -> None:
    """What an accepted config promises: finite numbers, rates that are rates."""
    for section in (config.extractor, config.model, config.training, config.sampling):
        for name, value in vars(section).items():
            if isinstance(value, float):
                assert math.isfinite(value), f"{name} = {value} was accepted"
    assert 0 <= config.model.dropout < 1, f"dropout {config.model.dropout} was accepted"


@pytest.mark.slow
@pytest.mark.parametrize(
    "line, message",
    [
        ("  learning_rate: .nan", "training.learning_rate: expected a finite number, got nan"),
        ("  learning_rate: .inf", "training.learning_rate: expected a finite number, got inf"),
        ("  dropout: 1.5", "model.dropout: must be below 1, got 1.5"),
        ("  dropout: 1", "model.dropout: must be below 1, got 1.0"),
        ("  momentum: " + "9" * 400, "training.momentum: expected a finite number, got 999"),
    ],
)
def test_regression_non_finite_numbers_and_dropout_rates_are_refused(project, line, message):
    """Found while fuzzing the config: NaN passed every minimum, a dropout rate of 1.5 reached keras, and
    an integer too large for a float crashed the loader with a traceback."""
    path = project / "patchwork.yaml"
    key = line.split(":")[0]
    path.write_text(
        "".join(line + "\n" if old.startswith(key + ":") else old for old in path.read_text().splitlines(True))
    )
    with pytest.raises(PatchworkError, match="patchwork.yaml: " + message.replace(".", r"\.")):
        load_config(path)


@pytest.mark.slow
def test_broken_config_from_the_real_executable_is_one_line(project):
    (project / "patchwork.yaml").write_text("classes: [a, b\nimshape: [224, 224]\n")
    result = subprocess.run(
        [sys.executable, "-m", "patchwork_cli", "status"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "patchwork.yaml:" in result.stderr and "invalid YAML" in result.stderr


# --- labels.csv and import files ----------------------------------------------------------

CELL_TEXT = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff") | st.sampled_from(",\"'#\n")
# Paths as people write them: anything printable, commas, quotes and newlines too; no surrounding spaces.
PATH_TEXT = st.text(CELL_TEXT, min_size=1, max_size=10).filter(lambda p: p.strip() == p and p)
GOOD = {"class": ["", "0", "1", "0.0", "1.0"], "flag": ["True", "False", "true", "FALSE", "1", "0", "yes", "no"]}
BAD = {"class": ["2", "-1", "x", "nan", "inf", "0.5", "１", "1 1", "True"], "flag": ["maybe", "2", "t", "nan", "Tru"]}
MUTATIONS = ["none", "bom", "crlf", "spaced header", "bad cell", "bad cell", "duplicate path", "missing column",
             "unknown column", "latin-1", "utf-16"]  # fmt: skip


@st.composite
def label_tables(draw):
    """(csv bytes, the mutation, what must happen): a table in the labels.csv format, perhaps broken."""
    rows = draw(st.integers(1, 6))
    paths = draw(st.lists(PATH_TEXT, min_size=rows, max_size=rows, unique=True))
    header = ["filepath", "exclude", "validation", "subset", *CLASSES]
    kinds = [None, "flag", "flag", None, "class", "class"]
    cells = [
        [path, *(draw(st.sampled_from(GOOD[k])) if k else draw(st.text(CELL_TEXT, max_size=5)) for k in kinds[1:])]
        for path in paths
    ]
    cells[0][3] = "café"  # one non-ASCII cell, so a wrong encoding always shows
    mutation = draw(st.sampled_from(MUTATIONS))
    expect = ("fine",)
    if mutation == "spaced header":
        header = [f" {name}" if draw(st.booleans()) else f"{name} " for name in header]
    elif mutation == "bad cell":
        row, column = draw(st.integers(0, rows - 1)), draw(st.sampled_from([1, 2, 4, 5]))
        cells[row][column] = draw(st.sampled_from(BAD[kinds[column]]))
        expect = ("error", f"line {row + 2}, column {header[column]!r}")
    elif mutation == "duplicate path" and rows > 1:
        first, second = sorted(draw(st.lists(st.integers(0, rows - 1), min_size=2, max_size=2, unique=True)))
        cells[second][0] = cells[first][0]
        expect = ("error", f"line {second + 2}: filepath {cells[first][0]!r} already appears on line {first + 2}")
    elif mutation == "missing column":
        column = draw(st.sampled_from([0, 4]))
        header.pop(column)
        for row in cells:
            row.pop(column)
        expect = ("error", "no 'filepath' column" if column == 0 else "class column 'a' is missing")
    elif mutation == "unknown column":
        header.append("zz")
        for row in cells:
            row.append("1")
        expect = ("error", "column 'zz' is not a class")
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n" if mutation == "crlf" else "\n").writerows([header, *cells])
    encoding = {"bom": "utf-8-sig", "latin-1": "latin-1", "utf-16": "utf-16"}.get(mutation, "utf-8")
    if encoding in ("latin-1", "utf-16"):
        expect = ("error", "not UTF-8")
    return text.getvalue().encode(encoding, errors="replace"), mutation, expect, cells


@pytest.mark.slow
def test_fuzzed_labels_csv_is_read_exactly_or_refused_clearly(project):
    cli = Cli(project.parent)
    outcomes = collections.Counter()

    @FUZZ
    @given(label_tables())
    def check(case):
        data, mutation, expect, cells = case
        (project / "labels.csv").write_bytes(data)
        (project / "labels.journal").write_bytes(b"")
        results = [
            assert_refused_or_fine(cli, ["--project", "proj", *args], project, ("labels.csv",))
            for args in (["status"], ["add", "new.txt"])
        ]
        refused = [result.exit_code == 1 for result in results]
        if expect[0] == "fine":
            assert refused == [False, False], (mutation, data)
            table = Project(project).labels()
            assert table["filepath"].tolist()[: len(cells)] == [row[0] for row in cells]
            expected_a = [float(row[4]) if row[4] else np.nan for row in cells]
            np.testing.assert_array_equal(table["a"].to_numpy(float)[: len(cells)], expected_a)
            assert table["subset"].tolist()[: len(cells)] == [row[3] for row in cells]
            assert table["exclude"].tolist()[: len(cells)] == [row[1].lower() in ("true", "1", "yes") for row in cells]
            with open(project / "edits.csv", "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows([["filepath", "b"], [cells[-1][0], "1"]])
            Cli(project)("label", "--import", "edits.csv")
            assert Project(project).labels()["b"].iloc[len(cells) - 1] == 1
        else:
            assert refused == [True, True], (mutation, data)
            assert expect[1] in results[0].stderr
            (project.parent / "edits.csv").write_text("filepath,a\nimg/0.png,1\n")
            edit = ["--project", "proj", "label", "--import", "edits.csv"]
            assert assert_refused_or_fine(cli, edit, project, ("labels.csv",)).exit_code == 1
        outcomes[f"{mutation}: {expect[0]}"] += 1

    check()
    report("labels.csv fuzz (hypothesis)", examples=sum(outcomes.values()), **dict(sorted(outcomes.items())))


@st.composite
def import_files(draw):
    """(csv text, expected error or None, the edits): an import over the project's images."""
    rows = draw(st.lists(st.integers(0, 5), min_size=1, max_size=8))
    columns = draw(st.lists(st.sampled_from(["a", "b", "exclude", "validation", "subset"]), unique=True, max_size=5))
    kinds = {"a": "class", "b": "class", "exclude": "flag", "validation": "flag", "subset": None}
    cells, error = [], None
    for line, row in enumerate(rows, start=2):
        values = []
        for column in columns:
            kind = kinds[column]
            bad = kind and error is None and draw(st.integers(0, 15)) == 0
            value = (
                draw(st.sampled_from(BAD[kind] if bad else GOOD[kind] + [""]))
                if kind
                else draw(st.text(CELL_TEXT, max_size=4))
            )
            if bad:
                error = f"line {line}, column {column!r}"
            values.append(value)
        cells.append([f"img/{row}.png", *values])
    if columns and draw(st.integers(0, 9)) == 0:  # (a row without values is no edit, and not checked)
        value = {"class": "1", "flag": "true", None: "x"}[kinds[columns[0]]]
        cells.append(["img/unknown.png", value, *[""] * (len(columns) - 1)])
        error = error or f"line {len(cells) + 1}: 'img/unknown.png' is not an image of this project"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([["filepath", *columns], *cells])
    return text.getvalue(), error


@pytest.mark.slow
def test_fuzzed_import_applies_whole_or_changes_nothing(project):
    cli = Cli(project.parent)
    outcomes = collections.Counter()

    @FUZZ
    @given(import_files())
    def check(case):
        text, error = case
        (project.parent / "edits.csv").write_text(text, encoding="utf-8")
        edit = ["--project", "proj", "label", "--import", "edits.csv"]
        result = assert_refused_or_fine(cli, edit, project, ("edits.csv",))
        fine = result.exit_code == 0
        assert fine == (error is None), (text, error)
        if error:
            assert error in result.stderr
        outcomes["applied" if fine else "refused"] += 1

    check()
    report("label --import fuzz (hypothesis)", examples=sum(outcomes.values()), **outcomes)


def test_regression_spaces_around_header_names_keep_the_labels(project):
    """Found by the fuzzer: `filepath, a` read the class column ' a' as missing and dropped its labels."""
    (project / "labels.csv").write_text("filepath , exclude,validation,subset, a ,b\nimg/0.png,False,False,,1,0\n")
    table = Project(project).labels()
    assert table["a"].tolist() == [1.0] and table["b"].tolist() == [0.0] and table["filepath"].tolist() == ["img/0.png"]


def test_missing_files_are_one_clear_line(project):
    cli = Cli(project.parent)
    shutil.copy(project / "labels.csv", project.parent / "saved.csv")
    os.unlink(project / "labels.csv")
    assert "labels.csv: no such file" in cli("--project", "proj", "status", expect=1).stderr
    shutil.copy(project.parent / "saved.csv", project / "labels.csv")
    os.unlink(project / "patchwork.yaml")
    assert "not a patchwork project" in cli("--project", "proj", "status", expect=1).stderr
