"""Benchmark of the label store (labels.csv + labels.journal) and of CLI start-up.

Builds a throw-away project of --rows images and --classes classes (about half the
cells labelled) in the system temp dir, then measures in one run:

- one label edit (`Project.label`: a journal append with flock + fsync), p50 / p99
  over --edits individually timed edits;
- rewriting the whole labels.csv (what a tool without a journal pays per edit), and
  how many times slower that is than one edit;
- opening the store (`Project.labels()`) with an empty journal and with 10,000
  journal lines pending;
- the row-alignment check a reader adds to opening the project: matching labels.csv's
  filepaths against features.zarr's record of its rows, in order (the fast path, every
  command) and after labels.csv was sorted by hand (every row found by filepath);
- wall time of `patchwork --help` and `patchwork --project DIR status` (on the big
  project, which has a feature store, and on a 100-row one) as subprocesses.

Targets are printed beside the figures with PASS / FAIL; the exit code is always 0.

    .venv/bin/python benchmarks/labels_bench.py [--rows N] [--classes C] [--edits E] [--json]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import as_json, print_table

from patchwork_cli.store.features import FeatureStore
from patchwork_cli.store.label_table import write_label_table
from patchwork_cli.store.project import FEATURES_NAME, Project, init_project

CLI = Path(sys.executable).parent / "patchwork"
PENDING = 10_000
# (figure, target, passes?)
TARGETS = {
    "edit_p99_ms": ("< 5 ms", lambda v: v < 5),
    "rewrite_vs_edit_p99": (">= 200x", lambda v: v >= 200),
    "open_pending_s": ("< 3 s", lambda v: v < 3),
    "help_s": ("< 0.5 s", lambda v: v < 0.5),
    "align_s": ("< 0.2 s", lambda v: v < 0.2),
}
LABELS = {
    "edit_p50_ms": "label edit, p50 (ms)",
    "edit_p99_ms": "label edit, p99 (ms)",
    "rewrite_ms": "rewrite labels.csv, median (ms)",
    "rewrite_vs_edit_p50": "rewrite / edit p50 (x faster)",
    "rewrite_vs_edit_p99": "rewrite / edit p99 (x faster)",
    "open_empty_s": "open, empty journal (s)",
    "open_pending_s": f"open, {PENDING:,} journal lines (s)",
    "align_s": "row-alignment check, in order (s)",
    "align_sorted_s": "row-alignment check, sorted by hand (s)",
    "help_s": "patchwork --help (s)",
    "status_s": "patchwork status, big project (s)",
    "status_tiny_s": "patchwork status, 100 rows (s)",
}


def timed(fn, repeat: int) -> list[float]:
    """Wall times in seconds of `repeat` calls of `fn`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def make_project(directory: str, rows: int, classes: int, rng: np.random.Generator) -> Project:
    """A project of `rows` images (files need not exist) with about half the cells labelled 0 or 1."""
    names = [f"class{k}" for k in range(classes)]
    paths = [f"img/{i:07d}.jpg" for i in range(rows)]
    logging.getLogger("patchwork").setLevel(logging.ERROR)  # "files do not exist" is expected
    project, _ = init_project(directory, images=paths, classes=names, cwd=directory)
    labelled = (rng.random((rows, classes)) < 0.5).tolist()
    values = rng.integers(0, 2, (rows, classes)).tolist()
    project.edit_labels(
        (path, {name: v for name, keep, v in zip(names, mask, vals, strict=True) if keep})
        for path, mask, vals in zip(paths, labelled, values, strict=True)
    )
    project.compact()
    logging.getLogger("patchwork").setLevel(logging.NOTSET)
    return project


def cli_seconds(args: list[str], repeat: int) -> float:
    run = lambda: subprocess.run([str(CLI), *args], check=True, capture_output=True)  # noqa: E731
    return statistics.median(timed(run, repeat))


def measure(tmp: str, rows: int, classes: int, edits: int) -> dict:
    rng = np.random.default_rng(0)
    big, tiny = Path(tmp, "big"), Path(tmp, "tiny")
    project = make_project(str(big), rows, classes, rng)
    make_project(str(tiny), 100, classes, rng)
    paths = [f"img/{i:07d}.jpg" for i in rng.integers(0, rows, max(edits, PENDING))]
    names = project.classes

    open_empty = timed(project.labels, 3)
    table = project.labels()
    rewrite = timed(lambda: write_label_table(table, Path(tmp, "rewrite.csv"), names), 3)
    edit = [timed(lambda p=p: project.label(p, seconds=1.0, **{names[0]: 1}), 1)[0] for p in paths[:edits]]
    project.compact()
    project.edit_labels((p, {names[i % len(names)]: i % 2}) for i, p in enumerate(paths[:PENDING]))
    open_pending = timed(project.labels, 3)

    # A store recording the table's rows (one float per row: the check never reads features).
    filepaths = project.labels()["filepath"].tolist()
    store = FeatureStore.create(big / FEATURES_NAME, filepaths, (1,), "float16", {"name": "bench"})
    align = timed(lambda: store.match(project.labels()["filepath"].tolist()), 5)
    open_again = timed(project.labels, 5)
    by_hand = filepaths[::-1]
    align_sorted = timed(lambda: store.match(by_hand), 3)

    p50, p99 = np.percentile(edit, [50, 99]) * 1000
    rewrite_ms = statistics.median(rewrite) * 1000
    return {
        "rows": rows,
        "classes": classes,
        "edits": edits,
        "edit_p50_ms": p50,
        "edit_p99_ms": p99,
        "rewrite_ms": rewrite_ms,
        "rewrite_vs_edit_p50": rewrite_ms / p50,
        "rewrite_vs_edit_p99": rewrite_ms / p99,
        "open_empty_s": statistics.median(open_empty),
        "open_pending_s": statistics.median(open_pending),
        # what the check adds: opening and checking, less opening alone, from the same run
        "align_s": statistics.median(align) - statistics.median(open_again),
        "align_sorted_s": statistics.median(align_sorted),
        "help_s": cli_seconds(["--help"], 5),
        "status_s": cli_seconds(["--project", str(big), "status"], 3),
        "status_tiny_s": cli_seconds(["--project", str(tiny), "status"], 5),
    }


def print_figures(figures: dict) -> None:
    title = (
        f"label store benchmark: {figures['rows']:,} rows, {figures['classes']} classes, "
        f"{figures['edits']:,} timed edits; status on the big project runs with {PENDING:,} journal lines"
    )
    print_table(title, LABELS, figures, TARGETS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--edits", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patchwork-bench-") as tmp:
        figures = measure(tmp, args.rows, args.classes, args.edits)
    if args.json:
        print(as_json(figures, TARGETS))
    else:
        print_figures(figures)


if __name__ == "__main__":
    main()
