"""Shared fixtures: real image files, a CLI runner, a ready project, a tiny Keras extractor.
The builders behind them live in builders.py."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from builders import CLASSES, Cli, tiny_keras_model, write_images

MODULE_MARKS = re.compile(r"^pytestmark\s*=\s*(\[.*?\]|[^\n]*)", re.MULTILINE | re.DOTALL)
# The -m grammar (pytest's docs): mark names joined by and / or / not and parentheses, with
# Python's precedence; a name may carry keyword arguments, name(key=value, ...), which the marks
# read from a module's source cannot be checked against, so they are ignored.
MARK_NAME = re.compile(r"[\w:+\-.\[\]\\/]+")
MARK_KWARGS = re.compile(r"(?<=[\w:+\-.\[\]\\/])\s*\(\s*[A-Za-z_]\w*\s*=[^()]*\)")
OPERATORS = {"and", "or", "not"}
PLAIN_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Name, ast.Load)


def mark_expression(markexpr: str):
    """The -m expression as (its mark names, a function of a set of marks saying whether a test
    carrying them is selected), or None for an expression this cannot read."""
    tokens = re.findall(r"\(|\)|[^\s()]+", MARK_KWARGS.sub("", markexpr))
    names = list(dict.fromkeys(t for t in tokens if t not in ("(", ")", *OPERATORS)))
    if not all(MARK_NAME.fullmatch(name) for name in names):
        return None
    variable = {name: f"mark_{i}" for i, name in enumerate(names)}  # names need not be identifiers
    try:
        tree = ast.parse(" ".join(variable.get(t, t) for t in tokens), mode="eval")
    except SyntaxError:
        return None
    if not all(isinstance(node, PLAIN_NODES) for node in ast.walk(tree)):
        return None
    code = compile(tree, "<-m expression>", "eval")
    return set(names), lambda marks: eval(code, {"__builtins__": {}}, {variable[n]: n in marks for n in names})


def pytest_ignore_collect(collection_path: Path, config):
    """Under -m, a test module whose module-wide marks (`pytestmark = ...`, read from its source) rule
    it out whatever its tests' own marks are is not even imported: `-m "not tensorflow"` must not pay
    for importing TensorFlow at collection."""
    markexpr = config.getoption("markexpr")
    if not markexpr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    found = MODULE_MARKS.search(collection_path.read_text(encoding="utf-8"))
    expression = mark_expression(markexpr) if found is not None else None
    if expression is None:  # no module-wide marks, or an expression it cannot read: collect as usual
        return None
    names, selects = expression
    module = set(re.findall(r"pytest\.mark\.(\w+)", found.group(1)))
    others = sorted(names - module)
    for values in itertools.product([False, True], repeat=len(others)):
        if selects(module | {name for name, value in zip(others, values, strict=True) if value}):
            return None  # some test of the module could be selected
    return True


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def images(tmp_path) -> list[Path]:
    return write_images(tmp_path / "images", 12)


@pytest.fixture
def project_dir(tmp_path, cli, images) -> Path:
    """A project `proj` over 12 images in tmp_path/images, classes cat, dog, bird."""
    cli("init", "proj", "--images", "images", "--classes", ",".join(CLASSES))
    return tmp_path / "proj"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small deterministic conv net on 32x32 RGB, feature maps 16x16x64 (256-row chunks)."""
    return tiny_keras_model(tmp_path_factory.mktemp("models") / "tiny.keras")


class Clock:
    """A clock the test moves by hand, for the seconds each edit records."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
