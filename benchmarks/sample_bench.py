"""Benchmark of `patchwork sample`: uncertainty sampling at a million images, the
diversity strategies (badge, coreset) against BADGE on the explicit gradient matrix, and
the coverage strategies (typiclust, probcover) and cluster-margin.

Builds throw-away projects in the system temp dir (labels.csv written directly, a run
directory of random predictions and embeddings published as `patchwork train` would),
then measures:

- maxent at --rows (1,000,000) rows and 10 classes, 1% of the rows partly labelled:
  wall time of `patchwork sample --strategy maxent -n 100` as a subprocess, median of
  3 runs (target < 2 s); a separate `python -X importtime` run of the same command
  proves TensorFlow is never imported.
- badge and coreset, k = 100, over --diverse-rows (200,000) rows with 256-dim
  embeddings and 10 classes, 1,000 rows labelled (the initial centres): wall time and
  peak RSS of `patchwork sample --strategy S -n 100` under `/usr/bin/time -f %M`
  (targets < 30 s, < 2 GiB). Measured in a fresh process: a child of this (big) parent
  would report the parent's high-water mark.
- Beside each wall time, the CPU time (user + system) GNU time reports, and the load
  average: on a shared machine the wall time stretches with other people's work.
- the same k-means++ seeding on the explicit (N, 256*10) float32 gradient matrix (2 GB),
  again in a fresh process under /usr/bin/time, beside the implicit seeding on the same
  arrays and seed: seconds and peak RSS of the selection, and the ratios.
- typiclust, probcover and cluster-margin, k = 100, over --diverse-rows (200,000) rows of
  1280-dim L2-normalised features (50 groups in a 64-dim latent space through a ReLU layer,
  plus noise: structure for k-means and balls to find), 1,000 of them labelled, through
  strategies.choose in a fresh process (the features as the Pool holds them: candidates and
  labelled rows); cluster-margin clusters the same features as embeddings, with random
  softmax outputs of 10 classes. Seconds of the selection (scikit-learn's import included:
  the strategies import it themselves) and peak RSS of the process, the features' 1 GB
  included (targets < 60 s and < 3 GiB; cluster-margin < 10 s).

    .venv/bin/python benchmarks/sample_bench.py [--rows N] [--diverse-rows N] [--only GROUP ...] [--json]

GROUP: maxent, diverse (badge, coreset and the two seedings), coverage (typiclust, probcover,
cluster-margin); all three by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from report import as_json, print_table

from patchwork_cli.store import runs
from patchwork_cli.store.label_table import empty_table, write_label_table
from patchwork_cli.store.project import init_project

CLI = Path(sys.executable).parent / "patchwork"
CLASSES = [f"class{k}" for k in range(10)]
WIDTH = 256
FEATURE_WIDTH = 1280
K = 100
LABELLED_SHARE = 0.01
DIVERSE_LABELLED = 1000
GROUPS = ("maxent", "diverse", "coverage")
# (figure, target, passes?)
TARGETS = {
    "maxent_1m_s": ("< 2 s", lambda v: v < 2),
    "maxent_imports_tensorflow": ("no", lambda v: not v),
    "badge_s": ("< 30 s", lambda v: v < 30),
    "badge_peak_mib": ("< 2048", lambda v: v < 2048),
    "coreset_s": ("< 30 s", lambda v: v < 30),
    "coreset_peak_mib": ("< 2048", lambda v: v < 2048),
    "typiclust_s": ("< 60 s", lambda v: v < 60),
    "typiclust_peak_mib": ("< 3072", lambda v: v < 3072),
    "probcover_s": ("< 60 s", lambda v: v < 60),
    "probcover_peak_mib": ("< 3072", lambda v: v < 3072),
    "cluster-margin_s": ("< 10 s", lambda v: v < 10),
}
LABELS = {
    "maxent_1m_s": "sample maxent -n 100 (s)",
    "maxent_1m_cpu_s": "  its CPU time, user + system (s)",
    "maxent_imports_tensorflow": "  imports TensorFlow",
    "badge_s": "sample badge -n 100 (s)",
    "badge_cpu_s": "  its CPU time, all threads (s)",
    "badge_peak_mib": "  peak RSS (MiB)",
    "coreset_s": "sample coreset -n 100 (s)",
    "coreset_cpu_s": "  its CPU time, all threads (s)",
    "coreset_peak_mib": "  peak RSS (MiB)",
    "implicit_select_s": "badge seeding, implicit (s)",
    "implicit_peak_mib": "  peak RSS (MiB)",
    "explicit_select_s": "badge seeding, explicit matrix (s)",
    "explicit_peak_mib": "  peak RSS (MiB)",
    "explicit_vs_implicit_s": "explicit / implicit time (x)",
    "explicit_vs_implicit_mib": "explicit / implicit memory (x)",
    "typiclust_s": "typiclust -n 100, selection (s)",
    "typiclust_cpu_s": "  its process's CPU time, all threads (s)",
    "typiclust_peak_mib": "  peak RSS, features included (MiB)",
    "probcover_s": "probcover -n 100, selection (s)",
    "probcover_cpu_s": "  its process's CPU time, all threads (s)",
    "probcover_peak_mib": "  peak RSS, features included (MiB)",
    "cluster-margin_s": "cluster-margin -n 100, selection (s)",
    "cluster-margin_cpu_s": "  its process's CPU time, all threads (s)",
    "cluster-margin_peak_mib": "  peak RSS, embeddings included (MiB)",
}

# Runs one BADGE seeding in a fresh process: implicit (the two factors) or explicit (the
# (N, d*C) matrix), same arrays, same centres, same seed; prints the seconds and the picks.
SEEDING = """
import json, sys, time
import numpy as np
from patchwork_cli.store import runs
from patchwork_cli.store.project import open_project
from patchwork_cli.sampling import scores, selection
from patchwork_cli.sampling.geometry import GradientPoints, Points

project = open_project(sys.argv[1])
run_dir = runs.resolve_run(project.directory, None)
table = project.labels()
match = runs.run_match(run_dir, table["filepath"].tolist())
p = runs.read_run_array(run_dir, runs.PREDICTIONS_NAME, match)
h = runs.read_run_array(run_dir, runs.EMBEDDINGS_NAME, match)
seen = ~np.isnan(table[project.classes].to_numpy()).all(axis=1)
g = scores.hard_prediction_gradient(p)
start = time.perf_counter()
if sys.argv[2] == "explicit":
    matrix = np.einsum("nd,nc->ndc", h, g).reshape(len(h), -1)
    del h, g, p
    points, centres = Points(matrix[~seen]), Points(matrix[seen])
    del matrix
else:
    points, centres = GradientPoints(h[~seen], g[~seen]), GradientPoints(h[seen], g[seen])
picks, _ = selection.kmeans_pp_seeding(points, int(sys.argv[3]), np.random.default_rng(0), centres)
print(json.dumps({"seconds": time.perf_counter() - start, "picks": picks.tolist()}))
"""


# Runs one strategy through strategies.choose in a fresh process, on the arrays write_pool
# left in a directory; prints the seconds of the selection and how many distinct rows it chose.
CHOOSE = """
import json, sys, time
import numpy as np
from patchwork_cli.sampling.strategies import Pool, choose, parse_strategy

directory, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
features = np.load(f"{directory}/candidates.npy")
pool = Pool(
    count=len(features),
    p=np.load(f"{directory}/p.npy"),
    h=features,
    features=features,
    seen_features=np.load(f"{directory}/seen.npy"),
    task="multiclass",
    class_count=int(sys.argv[4]),
)
start = time.perf_counter()
picks, _ = choose(parse_strategy(name, []), pool, k, np.random.default_rng(0))
print(json.dumps({"seconds": time.perf_counter() - start, "distinct": len(set(picks.tolist()))}))
"""


def write_pool(directory: Path, rows: int, labelled: int, rng: np.random.Generator) -> None:
    """The Pool's arrays as .npy files: candidates' and labelled rows' features (`labelled` of
    the `rows`, spread evenly), and the candidates' softmax outputs. Written a chunk at a time
    through memory maps, so the parent stays small."""
    directory.mkdir()
    groups, latent, chunk = 50, 64, 1 << 15
    centres = 3 * rng.normal(size=(groups, latent)).astype(np.float32)
    mixing = rng.normal(size=(latent, FEATURE_WIDTH)).astype(np.float32) / np.sqrt(latent)
    is_seen = np.zeros(rows, dtype=bool)
    is_seen[np.linspace(0, rows - 1, labelled).astype(int)] = True
    open_array = np.lib.format.open_memmap
    candidates = open_array(directory / "candidates.npy", "w+", np.float32, (rows - labelled, FEATURE_WIDTH))
    seen = open_array(directory / "seen.npy", "w+", np.float32, (labelled, FEATURE_WIDTH))
    done = {"candidates": 0, "seen": 0}
    for start in range(0, rows, chunk):
        count = min(rows, start + chunk) - start
        z = centres[rng.integers(0, groups, count)] + rng.normal(size=(count, latent)).astype(np.float32)
        x = np.maximum(z @ mixing, 0) + 0.3 * rng.random((count, FEATURE_WIDTH), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        mine = is_seen[start : start + count]
        for name, target, part in (("candidates", candidates, x[~mine]), ("seen", seen, x[mine])):
            target[done[name] : done[name] + len(part)] = part
            done[name] += len(part)
    candidates.flush()
    seen.flush()
    logits = rng.normal(0, 2, (rows - labelled, len(CLASSES))).astype(np.float32)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.save(directory / "p.npy", p / p.sum(axis=1, keepdims=True))


def write_project(directory: Path, rows: int, width: int, labelled: int, rng: np.random.Generator) -> None:
    """A project of `rows` images (files need not exist), `labelled` of them (spread
    evenly) with labels on some classes, and a published run of random outputs."""
    logging.getLogger("patchwork").setLevel(logging.ERROR)  # "files do not exist" is expected
    init_project(directory, images=["img/0000000.jpg"], classes=CLASSES, cwd=directory)
    table = empty_table(CLASSES, [f"img/{i:07d}.jpg" for i in range(rows)])
    seen = np.linspace(0, rows - 1, labelled).astype(int)
    values = rng.integers(0, 2, (labelled, len(CLASSES))).astype(float)
    values[rng.random(values.shape) < 0.3] = np.nan
    values[:, 0] = rng.integers(0, 2, labelled)  # at least one class labelled on each
    table.loc[seen, CLASSES] = values
    write_label_table(table, directory / "labels.csv", CLASSES)

    run_id = runs.new_run_id()
    staging = runs.staging_dir(directory, run_id)
    chunk = 1 << 16
    logits = rng.normal(0, 2, (rows, len(CLASSES))).astype(np.float32)
    probabilities = 1 / (1 + np.exp(-logits))
    zarr.create_array(str(staging / runs.PREDICTIONS_NAME), data=probabilities, chunks=(chunk, len(CLASSES)))
    embeddings = zarr.create_array(
        str(staging / runs.EMBEDDINGS_NAME), shape=(rows, width), chunks=(chunk, width), dtype="float32"
    )
    for start in range(0, rows, chunk):  # a chunk at a time: the parent stays small
        stop = min(rows, start + chunk)
        embeddings[start:stop] = np.maximum(rng.normal(size=(stop - start, width)), 0).astype(np.float32)
    runs.write_json(staging / runs.RUN_FILE, {"run_id": run_id, "classes": CLASSES})
    runs.publish(directory, staging, run_id)


def timed_run(args: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB) and stdout of a fresh
    process under GNU time."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *args], capture_output=True, text=True, check=True, timeout=1800
    )
    seconds = time.perf_counter() - start
    peak_kib, user, system = result.stderr.strip().splitlines()[-1].split()
    return seconds, float(user) + float(system), int(peak_kib) / 1024, result.stdout


def imports_tensorflow(project: Path) -> bool:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "patchwork_cli", "-C", str(project), "sample", "-s", "maxent"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    return any(name == "tensorflow" or name.startswith("tensorflow.") for name in modules)


def measure(tmp: str, rows: int, diverse_rows: int, groups: list[str]) -> dict:
    rng = np.random.default_rng(0)
    figures = {"rows": rows, "diverse_rows": diverse_rows, "groups": groups, "load_average": os.getloadavg()[0]}
    if "maxent" in groups:
        figures.update(measure_maxent(Path(tmp, "big"), rows, rng))
    if "diverse" in groups:
        figures.update(measure_diverse(Path(tmp, "diverse"), diverse_rows, rng))
    if "coverage" in groups:
        figures.update(measure_coverage(Path(tmp, "coverage"), diverse_rows, rng))
    figures["load_average_after"] = os.getloadavg()[0]
    return figures


def measure_maxent(big: Path, rows: int, rng: np.random.Generator) -> dict:
    write_project(big, rows, 8, int(rows * LABELLED_SHARE), rng)
    maxent = [timed_run([str(CLI), "-C", str(big), "sample", "-s", "maxent", "-n", str(K)]) for _ in range(3)]
    return {
        "maxent_1m_s": statistics.median(m[0] for m in maxent),
        "maxent_1m_cpu_s": statistics.median(m[1] for m in maxent),
        "maxent_imports_tensorflow": imports_tensorflow(big),
    }


def measure_diverse(diverse: Path, diverse_rows: int, rng: np.random.Generator) -> dict:
    write_project(diverse, diverse_rows, WIDTH, DIVERSE_LABELLED, rng)
    sample = [str(CLI), "-C"]
    figures = {}
    for strategy in ("badge", "coreset"):
        seconds, cpu, peak, out = timed_run(
            [*sample, str(diverse), "sample", "-s", strategy, "-n", str(K), "--seed", "0"]
        )
        assert len(out.split()) == K, out
        figures.update({f"{strategy}_s": seconds, f"{strategy}_cpu_s": cpu, f"{strategy}_peak_mib": peak})
    seedings = {}
    for kind in ("implicit", "explicit"):
        _, _, peak, out = timed_run([sys.executable, "-c", SEEDING, str(diverse), kind, str(K)])
        seedings[kind] = json.loads(out)
        figures[f"{kind}_select_s"], figures[f"{kind}_peak_mib"] = seedings[kind]["seconds"], peak
    figures["same_picks"] = seedings["implicit"]["picks"] == seedings["explicit"]["picks"]
    figures["explicit_vs_implicit_s"] = figures["explicit_select_s"] / figures["implicit_select_s"]
    figures["explicit_vs_implicit_mib"] = figures["explicit_peak_mib"] / figures["implicit_peak_mib"]
    return figures


def measure_coverage(directory: Path, diverse_rows: int, rng: np.random.Generator) -> dict:
    write_pool(directory, diverse_rows, DIVERSE_LABELLED, rng)
    figures = {}
    for strategy in ("typiclust", "probcover", "cluster-margin"):
        _, cpu, peak, out = timed_run(
            [sys.executable, "-c", CHOOSE, str(directory), strategy, str(K), str(len(CLASSES))]
        )
        chosen = json.loads(out)
        assert chosen["distinct"] == K, chosen
        figures.update({f"{strategy}_s": chosen["seconds"], f"{strategy}_cpu_s": cpu, f"{strategy}_peak_mib": peak})
    return figures


def print_figures(figures: dict) -> None:
    groups = figures["groups"]
    parts = {
        "maxent": f"maxent over {figures['rows']:,} rows x {len(CLASSES)} classes",
        "diverse": f"badge and coreset k={K} over {figures['diverse_rows']:,} rows x {WIDTH}-dim embeddings",
        "coverage": f"typiclust, probcover, cluster-margin k={K} over {figures['diverse_rows']:,} rows x "
        f"{FEATURE_WIDTH}-dim features",
    }
    title = f"sample benchmark: {'; '.join(parts[group] for group in groups)}"
    if "diverse" in groups or "coverage" in groups:
        title += f"; {DIVERSE_LABELLED:,} labelled"
    measured = {key: label for key, label in LABELS.items() if key in figures}
    print_table(title, measured, figures, measured_targets(figures))
    if "diverse" in groups:
        print(f"implicit and explicit seedings pick the same rows: {'yes' if figures['same_picks'] else 'NO'}")
    print(
        f"1-minute load average before / after: {figures['load_average']:.1f} / {figures['load_average_after']:.1f} "
        f"on {os.cpu_count()} CPUs (wall times stretch with other load; CPU times much less)"
    )


def measured_targets(figures: dict) -> dict:
    """The targets of the figures this run measured (--only leaves some out)."""
    return {key: target for key, target in TARGETS.items() if key in figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--diverse-rows", type=int, default=200_000)
    parser.add_argument("--only", choices=GROUPS, action="append", help="measure only this group (repeatable)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    groups = [group for group in GROUPS if group in (args.only or GROUPS)]
    with tempfile.TemporaryDirectory(prefix="patchwork-sample-bench-") as tmp:
        figures = measure(tmp, args.rows, args.diverse_rows, groups)
    if not args.json:
        print_figures(figures)
    print(as_json(figures, measured_targets(figures), indent=None))


if __name__ == "__main__":
    main()
