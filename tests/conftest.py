"""Shared fixtures: real image files, a CLI runner, a ready project, a tiny Keras extractor.
The builders behind them live in builders.py."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from builders import CLASSES, Cli, tiny_keras_model, write_images

MODULE_MARKS = re.compile(r"^pytestmark\s*=\s*(\[.*?\]|[^\n]*)", re.MULTILINE | re.DOTALL)
KEYWORDS = {"and", "or", "not", "True", "False"}


def pytest_ignore_collect(collection_path: Path, config):
    """Under -m, a test module whose module-wide marks (`pytestmark = ...`, read from its source) rule
    it out whatever its tests' own marks are is not even imported: `-m "not tensorflow"` must not pay
    for importing TensorFlow at collection."""
    markexpr = config.getoption("markexpr")
    if not markexpr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    found = MODULE_MARKS.search(collection_path.read_text(encoding="utf-8"))
    if found is None:
        return None
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(markexpr)
    except Exception:  # a pytest without it, or an expression it cannot read: collect as usual
        return None
    module = set(re.findall(r"pytest\.mark\.(\w+)", found.group(1)))
    others = sorted(set(re.findall(r"[A-Za-z_]\w*", markexpr)) - KEYWORDS - module)
    for values in itertools.product([False, True], repeat=len(others)):
        marks = module | {name for name, value in zip(others, values, strict=True) if value}
        if expression.evaluate(lambda name, /, marks=marks, **kwargs: name in marks):
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
