"""The layout docs/ARCHITECTURE.md describes, checked on the source: the layers, no import cycles
(imports inside functions included), no module over 450 lines, package __init__ files that only
say what the package is for."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import patchwork_cli

PACKAGE = Path(patchwork_cli.__file__).parent
MAX_LINES = 450

# What each layer may import (besides itself): the table of docs/ARCHITECTURE.md.
ALLOWED = {
    "errors": set(),
    "util": {"errors"},
    "store": {"errors", "util"},
    "extractors": {"errors", "util", "store"},  # store: the runtimes' names, in store/config.py
    "modeling": {"errors", "util", "store"},
    "distributed": {"errors", "util", "store"},
    "evaluation": {"errors", "util", "store"},
    "sampling": {"errors", "util", "store"},
    "labelling": {"errors", "util", "store"},
    "extraction": {"errors", "util", "store", "extractors", "distributed"},
    "pretraining": {"errors", "util", "store", "extractors"},
    "training": {"errors", "util", "store", "modeling", "distributed", "evaluation"},
    "deploy": {"errors", "util", "store", "extractors", "modeling", "extraction", "evaluation", "version"},
}


def module_name(path: Path) -> str:
    parts = ["patchwork_cli", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """The patchwork modules `name` imports anywhere in its body (a name imported from a package
    counts as the package unless it is one of its modules)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    return {module for module in found if module in MODULES and module != name}


GRAPH = nx.DiGraph([(name, target) for name, path in MODULES.items() for target in imports_of(name, path)])


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "version"  # the package itself: __version__ and the lazy Python API
    return parts[1]


def test_the_graph_sees_function_level_imports():
    # training/prediction.py imports distributed.tasks inside a function only
    assert GRAPH.has_edge("patchwork_cli.training.prediction", "patchwork_cli.distributed.tasks")


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(GRAPH))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])


def test_each_layer_imports_only_the_layers_below_it():
    wrong = [
        f"{source} imports {target}"
        for source, target in GRAPH.edges
        if layer(source) in ALLOWED and layer(target) != layer(source) and layer(target) not in ALLOWED[layer(source)]
    ]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_the_limit(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(PACKAGE)}: {lines} lines"


def test_package_inits_only_say_what_the_package_is_for():
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name != "patchwork_cli":
            body = ast.parse(path.read_text(encoding="utf-8")).body
            assert len(body) == 1 and isinstance(body[0].value, ast.Constant), path
            assert layer(name + ".x") in ALLOWED or layer(name + ".x") == "cli", f"{name}: not in the layer table"


# labels.csv's fixed columns are named in store/label_schema.py alone. The same words also name
# other things; where a module spells one for such a thing, it is listed here with what it names.
SCHEMA = "patchwork_cli.store.label_schema"
PART = "the validation part of the rows (store.splits.Parts), as the counts and metrics name it"
DUPLICATES_CSV = "duplicates.csv's column (store.duplicate_groups.COLUMNS)"
OTHER_MEANINGS = {
    ("patchwork_cli.cli.duplicates", "filepath"): DUPLICATES_CSV,
    ("patchwork_cli.cli.sample", "filepath"): "sample's output column (sampling.sample.COLUMNS)",
    ("patchwork_cli.cli.train", "validation"): PART,
    ("patchwork_cli.deploy.export", "filepath"): "predictions.csv's first column (PATH_COLUMN)",
    ("patchwork_cli.deploy.export", "validation"): PART,
    ("patchwork_cli.evaluation.duplicates", "filepath"): DUPLICATES_CSV,
    ("patchwork_cli.evaluation.metrics", "validation"): PART,
    ("patchwork_cli.evaluation.plots", "validation"): PART,
    ("patchwork_cli.evaluation.report", "validation"): PART,
    ("patchwork_cli.evaluation.status", "validation"): PART,
    ("patchwork_cli.evaluation.tables", "validation"): PART,
    ("patchwork_cli.extraction.extract", "filepath"): "features_failures.csv's column",
    ("patchwork_cli.sampling.filters", "subset"): "a filter's name (--from subset:V)",
    ("patchwork_cli.sampling.filters", "validation"): "a filter's name (--from validation)",
    ("patchwork_cli.sampling.sample", "filepath"): "sample's output column (COLUMNS)",
    ("patchwork_cli.store.duplicate_groups", "filepath"): DUPLICATES_CSV,
    ("patchwork_cli.store.features", "filepath"): "the feature store's array of image paths (FILEPATHS_NAME)",
    ("patchwork_cli.store.splits", "validation"): PART,
}


def fixed_column_literals() -> dict[tuple[str, str], list[int]]:
    """Every string literal in the package that is one of labels.csv's fixed column names (dict keys,
    subscripts and f-strings' fields included), by (module, name): the lines it is on."""
    from patchwork_cli.store.label_schema import FIXED_COLUMNS

    found: dict[tuple[str, str], list[int]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in FIXED_COLUMNS:
                found.setdefault((name, node.value), []).append(node.lineno)
    return found


def test_labels_csv_columns_are_named_in_the_schema_only():
    from patchwork_cli.store.label_schema import FIXED_COLUMNS

    found = fixed_column_literals()
    assert {column for module, column in found if module == SCHEMA} == set(FIXED_COLUMNS)
    elsewhere = [
        f"{MODULES[module].relative_to(PACKAGE)}, line {', '.join(map(str, lines))}: {column!r} "
        "(labels.csv's column? its name is in store/label_schema.py; else list it in OTHER_MEANINGS)"
        for (module, column), lines in sorted(found.items())
        if module != SCHEMA and (module, column) not in OTHER_MEANINGS
    ]
    assert elsewhere == []


def test_every_other_meaning_listed_is_still_there():
    assert sorted(set(OTHER_MEANINGS) - set(fixed_column_literals())) == []
