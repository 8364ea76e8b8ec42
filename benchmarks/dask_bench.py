"""Benchmark of `patchwork extract --dask`: single-process against a 2-worker LocalCluster.

Setup (untimed): --images real JPEGs (as in extract_bench.py: random crops of skimage's
photographs, about 640x480) and two projects over them with the default config
(efficientnet_lite0 at 224x224, batch 32). Then, in one run:

- `patchwork extract --json` on the first project as a subprocess: one process, TensorFlow
  using every core. Its images_per_second excludes TensorFlow start-up and model building.
- a LocalCluster of 2 single-threaded worker processes started here (TensorFlow 1 thread
  each on 2 cores: what `--dask local --workers 2` starts), warmed up by extracting a
  separate 256-image project so that each worker has imported TensorFlow and built the
  extractor, then `patchwork extract --dask ADDRESS --json` on the second project as a
  subprocess: its images_per_second is the steady state, like the single-process figure.
  The warm-up's seconds (cluster start, TensorFlow imports, model builds) are printed too:
  a cold `--dask local` run pays them once on top.
- whether the two feature stores are bit-identical.

On one machine the workers share its cores with each other instead of TensorFlow sharing
them within one process, so the ratio is about 1 (see the README, "Scaling out"); Dask pays
off with more hosts. Exit code is 0 whatever the figures. Run it on an idle machine.

    .venv/bin/python benchmarks/dask_bench.py [--images N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).parent))
from extract_bench import write_images  # noqa: E402  (the same images as the extract benchmark)

from patchwork_cli.distributed.cluster import ClusterSpec, connect  # noqa: E402
from patchwork_cli.store.project import init_project, open_project  # noqa: E402

CLI = Path(sys.executable).parent / "patchwork"
WORKERS = 2
WARM_UP_IMAGES = 256  # four 64-row chunks of EfficientNet-Lite0's 7x7x1280 features: work for both workers


def run_extract(project: Path, *options: str) -> dict:
    """`patchwork extract --json` on `project`: its report and wall time."""
    start = time.perf_counter()
    child = subprocess.run([CLI, "--project", project, "extract", "--json", *options], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"patchwork extract failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return {**json.loads(child.stdout), "wall_s": wall}


def features(project: Path) -> np.ndarray:
    return zarr.open_group(str(project / "features.zarr"), mode="r")["features"][:]


def measure(tmp: Path, count: int) -> dict:
    paths = write_images(tmp / "images", count, np.random.default_rng(0))
    warm_paths = write_images(tmp / "warm-up", WARM_UP_IMAGES, np.random.default_rng(1))
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    for name, images in (("single", paths), ("dask", paths), ("warm", warm_paths)):
        init_project(tmp / name, images=images, classes=["a"], cwd=tmp)
    single = run_extract(tmp / "single")
    started = time.perf_counter()
    # the cluster `--dask local --workers 2` starts (a local cluster needs no project's TLS files)
    with connect(ClusterSpec("local", WORKERS), open_project(tmp / "single")) as client:
        address = client.scheduler.address
        run_extract(tmp / "warm", "--dask", address)
        warm_up = time.perf_counter() - started
        spread = run_extract(tmp / "dask", "--dask", address)
    return {
        "images": count,
        "single_rate": single["images_per_second"],
        "single_wall_s": single["wall_s"],
        "dask_rate": spread["images_per_second"],
        "dask_wall_s": spread["wall_s"],
        "ratio": spread["images_per_second"] / single["images_per_second"],
        "warm_up_s": warm_up,
        "identical": bool(np.array_equal(features(tmp / "single"), features(tmp / "dask"))),
    }


def print_table(figures: dict) -> None:
    n = figures["images"]
    print(
        f"dask benchmark: {n} JPEGs ~640x480, efficientnet_lite0 at 224x224, batch 32, {os.cpu_count()} CPUs, "
        f"LocalCluster of {WORKERS} single-threaded workers"
    )
    rows = {
        "single_rate": "single process (img/s)",
        "single_wall_s": "  its wall time, TF start-up included (s)",
        "dask_rate": f"{WORKERS}-worker LocalCluster, warm (img/s)",
        "dask_wall_s": "  its wall time, client included (s)",
        "ratio": "dask / single",
        "warm_up_s": "cluster start and worker warm-up (s)",
    }
    for key, label in rows.items():
        print(f"{label:<44} {figures[key]:>9.2f}")
    print(f"{'features bit-identical':<44} {'yes' if figures['identical'] else 'NO':>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patchwork-dask-bench-") as tmp:
        figures = measure(Path(tmp), args.images)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)


if __name__ == "__main__":
    main()
