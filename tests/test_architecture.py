"""The layout docs/ARCHITECTURE.md describes, checked on the source: the layers, no import cycles
(imports inside functions included), no module over 450 lines, package __init__ files that only
say what the package is for; and the one-home rules: the strategies' names spelled only in
sampling/registry.py, labels.csv's columns named only in store/label_schema.py, metrics.json read
only by its record (store/run_metrics.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

import patchwork_cli
from patchwork_cli.sampling import registry

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


# --- a strategy's name has one home: sampling/registry.py ------------------------------------

REGISTRY_MODULE = "patchwork_cli.sampling.registry"
# Names as words, and their forms without the class ("high" of "high:C", as --seed's help has it).
STRATEGY_WORDS = set(registry.STRATEGIES) | {record.base for record in registry.RECORDS}
# The string literals outside the registry that are one strategy's name, and why each is not a
# copy of the list. A literal, tuple, list, set or dict naming two strategies or more is always
# refused: that is a hand-written list.
ONE_NAME_ALLOWED = {
    # "auto" names other choices too (the extractor runtime's, the head's); in store/config.py it
    # is also sampling.strategy's default, and store sits below sampling.
    ("patchwork_cli.store.config", "auto"),
    ("patchwork_cli.extractors.runtimes", "auto"),
    ("patchwork_cli.modeling.spec", "auto"),
    ("patchwork_cli.deploy.model", "auto"),
    ("patchwork_cli.deploy.predict", "auto"),
    # auto's rule (strategies.auto_strategy): the strategies it stands for
    ("patchwork_cli.sampling.strategies", "typiclust"),
    ("patchwork_cli.sampling.strategies", "cluster-margin"),
    ("patchwork_cli.sampling.strategies", "badge"),
    # sample() itself: auto is resolved before anything is read, and is random before any extract;
    # disagree takes every row by default, the out-of-fold predictions, and says given / suggested
    ("patchwork_cli.sampling.sample", "auto"),
    ("patchwork_cli.sampling.sample", "random"),
    ("patchwork_cli.sampling.sample", "disagree"),
}


def strategy_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z][\w+:-]*[\w+]", text)) & STRATEGY_WORDS


def hand_written_strategy_names(module: str, source: str) -> list[str]:
    """Where `source` spells strategies' names itself: a docstring may, nothing else may."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            elements = node.keys if isinstance(node, ast.Dict) else node.elts
            named = [e.value for e in elements if isinstance(e, ast.Constant) and e.value in STRATEGY_WORDS]
            if len(named) >= 2:
                found.append(f"{module}:{node.lineno}: {named}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            alone = node.value in STRATEGY_WORDS and (module, node.value) not in ONE_NAME_ALLOWED
            if alone or len(strategy_words(node.value)) >= 2:
                found.append(f"{module}:{node.lineno}: {node.value!r}")
    return found


def test_strategy_names_are_spelled_only_in_the_registry():
    found = [
        offence
        for name, path in MODULES.items()
        if name != REGISTRY_MODULE
        for offence in hand_written_strategy_names(name, path.read_text(encoding="utf-8"))
    ]
    assert found == [], "strategy names outside sampling/registry.py (build them from it): " + "; ".join(found)


def test_the_check_finds_a_hand_written_list():
    module = "patchwork_cli.cli.sample"
    assert hand_written_strategy_names(module, 'HELP = "random, maxent, badge"')
    assert hand_written_strategy_names(module, 'help = f"Seed for ({x}) random, high, low."')
    assert hand_written_strategy_names(module, 'NAMES = ("coreset", "margin")')
    assert hand_written_strategy_names(module, 'if form == "typiclust": pass')
    assert hand_written_strategy_names("patchwork_cli.sampling.sample", 'FORMS = {"auto": 1, "disagree": 2}')
    assert not hand_written_strategy_names(module, '"""Docs may say random and maxent."""\nx = "--strategy random"')


def test_sample_help_is_built_from_the_registry():
    from typer.main import get_command

    from patchwork_cli.cli.app import app

    command = get_command(app).commands["sample"]
    helps = {param.name: param.help for param in command.params}
    assert helps["strategy"] == f"{registry.listing()} (default: sampling.strategy in patchwork.yaml)."
    assert helps["seed"] == f"Seed for the random strategies ({registry.seeded_listing()})."
    assert command.epilog.endswith(registry.described())


# labels.csv's fixed columns are named in store/label_schema.py alone. The same words also name
# other things; where a module spells one for such a thing, it is listed here with what it names.
SCHEMA = "patchwork_cli.store.label_schema"
PART = "the validation part of the rows (store.splits.Parts), as the counts and metrics name it"
DUPLICATES_CSV = "duplicates.csv's column (store.duplicate_groups.COLUMNS)"
OTHER_MEANINGS = {
    ("patchwork_cli.cli.duplicates", "filepath"): DUPLICATES_CSV,
    ("patchwork_cli.cli.sample", "filepath"): "sample's output column (sampling.sample.COLUMNS)",
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
    ("patchwork_cli.store.run_metrics", "validation"): PART,
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


# metrics.json has one reader and writer, store/run_metrics.py's RunMetrics; everything else reads
# its attributes. So no other module names the file, and none reads a metrics value by a string
# key: `metrics["validation"]`, `report.metrics.get("agreement")`, `RunMetrics.read(d).as_dict()["train"]`.
METRICS_RECORD = "patchwork_cli.store.run_metrics"
# What a chain of reads reaches metrics through: a name or attribute `metrics` (or `*_metrics`), a
# key "metrics" (the model card's copy), the record's class or the functions that build it.
METRICS_SOURCES = {"RunMetrics", "compute_metrics", "score_run"}


def names_metrics_file(tree: ast.AST) -> list[int]:
    """The lines that spell metrics.json or name METRICS_FILE."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Constant) and node.value == "metrics.json")
        or (isinstance(node, ast.Name) and node.id == "METRICS_FILE")
        or (isinstance(node, ast.Attribute) and node.attr == "METRICS_FILE")
        or (isinstance(node, ast.alias) and node.name == "METRICS_FILE")
    ]


def _is_metrics_name(name: str) -> bool:
    return name == "metrics" or name.endswith("_metrics") or name in METRICS_SOURCES


def _receivers(node: ast.AST):
    """What `node` is read from, innermost last: `a.b["c"].get` -> a.b["c"], a.b, a."""
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
        yield node


def _reaches_metrics(node: ast.AST, bound: set[str]) -> bool:
    if isinstance(node, ast.IfExp):  # either branch: `m = RunMetrics.read(d).as_dict() if d else {}`
        return _reaches_metrics(node.body, bound) or _reaches_metrics(node.orelse, bound)
    if isinstance(node, ast.BoolOp):  # `(m or {}).get("k")`
        return any(_reaches_metrics(value, bound) for value in node.values)
    for link in [node, *_receivers(node)]:
        if isinstance(link, ast.Name) and (link.id in bound or _is_metrics_name(link.id)):
            return True
        if isinstance(link, ast.Attribute) and _is_metrics_name(link.attr):
            return True
        if isinstance(link, ast.Subscript) and isinstance(link.slice, ast.Constant) and link.slice.value == "metrics":
            return True
    return False


def _string_key_read(node: ast.AST) -> ast.AST | None:
    """What `node` reads by a string key (x["k"], x.get("k", ...)), or None."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.func.value
    return None


def _own_nodes(scope: ast.AST):
    """The nodes of `scope` (a module or a function), not those of the functions defined in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            todo.extend(ast.iter_child_nodes(node))


def metrics_read_by_key(tree: ast.AST) -> list[int]:
    """The lines that read a metrics value by a string key: through a metrics name (above), or
    through a name the same function bound to one (`m = RunMetrics.read(d).as_dict()`)."""
    lines = []
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]:
        nodes = list(_own_nodes(scope))
        bound = {
            target.id
            for node in nodes
            if isinstance(node, ast.Assign) and _reaches_metrics(node.value, set())
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in nodes:
            read = _string_key_read(node)
            if read is not None and _reaches_metrics(read, bound):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_metrics_json_is_read_only_through_its_record():
    wrong = []
    for name, path in sorted(MODULES.items()):
        if name == METRICS_RECORD:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        wrong += [f"{path.relative_to(PACKAGE)}:{line} names metrics.json" for line in names_metrics_file(tree)]
        wrong += [f"{path.relative_to(PACKAGE)}:{line} reads metrics by key" for line in metrics_read_by_key(tree)]
    assert wrong == []
