"""Benchmark of `patchwork extract`: throughput against the bare model, and peak memory.

Setup (untimed): --images real JPEGs (photographs from skimage.data, randomly cropped,
flipped and resized to about 640x480, quality 90) in a temp dir, and two projects with
the default config (efficientnet_lite0, 224x224, batch 32): one over all the images
and one over the first quarter. Then, in one run:

- `patchwork extract --json` on each project as a subprocess: its own images_per_second
  (from its JSON; TensorFlow start-up and model building are excluded), the wall time,
  and the child's peak RSS: GNU time's %M, the ru_maxrss of the process it runs (the
  kernel's high-water mark of its resident set; exact, no sampling). Not os.wait4 or
  RUSAGE_CHILDREN here: Python spawns children with vfork, and at exec Linux folds the
  parent's own high-water RSS into the child's ru_maxrss, so a child of this process
  (which holds TensorFlow and the decoded images) would report at least this
  process's peak; /usr/bin/time forks from a 2 MB process instead.
- the model-bound rate in this process: the same extractor, all images decoded into
  memory first with load_image, then model.predict_on_batch timed over zero-padded
  batches of 32 after one warm-up batch. The CPU speed of a shared VM drifts by several
  per cent within a minute, so half of the batches run just before the full extract and
  half just after it.

Targets: extract / model-bound >= 0.85, and the full project's peak RSS within 1.15x of
the quarter project's (memory flat in the number of images). Exit code is 0 whatever the
verdicts. Run it on an otherwise idle machine: other load on the cores skews the ratio.

    .venv/bin/python benchmarks/extract_bench.py [--images N] [--json]
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
from PIL import Image
from report import as_json, print_table
from skimage import data

from patchwork_cli.project import init_project

CLI = Path(sys.executable).parent / "patchwork"
SOURCES = "chelsea coffee astronaut rocket camera immunohistochemistry hubble_deep_field retina coins moon cell"
IMSHAPE, BATCH = (224, 224), 32
TARGETS = {
    "ratio": (">= 0.85", lambda v: v >= 0.85),
    "rss_ratio": ("<= 1.15x", lambda v: v <= 1.15),
}


def write_images(directory: Path, count: int, rng: np.random.Generator) -> list[str]:
    """`count` JPEGs: a random crop (60-100% per side) of a random photograph, maybe flipped, ~640x480."""
    photos = [getattr(data, name)() for name in SOURCES.split()]
    directory.mkdir()
    paths = []
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        h, w = (int(s * rng.uniform(0.6, 1.0)) for s in photo.shape[:2])
        top, left = rng.integers(photo.shape[0] - h + 1), rng.integers(photo.shape[1] - w + 1)
        image = Image.fromarray(photo[top : top + h, left : left + w])
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        size = (int(640 * rng.uniform(0.9, 1.1)), int(480 * rng.uniform(0.9, 1.1)))
        path = directory / f"{i:06d}.jpg"
        image.resize(size, Image.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    return paths


def run_extract(project: Path) -> dict:
    """`patchwork extract --json` on `project`: its reported rate, wall time and peak RSS."""
    rss_file = project.with_suffix(".maxrss")
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), CLI, "--project", project, "extract", "--json"]
    start = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"patchwork extract failed ({child.returncode}):\n{child.stderr[-2000:]}")
    rate = json.loads(child.stdout)["images_per_second"]
    return {"rate": rate, "wall_s": wall, "rss_mib": int(rss_file.read_text().split()[-1]) / 1024}


def load_model(paths: list[str]):
    """The extractor's model, warmed up (graph traced), and every image decoded into memory."""
    from patchwork_cli.extractors.loading import load_extractor
    from patchwork_cli.images import load_image

    model = load_extractor("efficientnet_lite0", IMSHAPE).model
    pixels = np.stack([load_image(path, IMSHAPE) for path in paths])
    model.predict_on_batch(np.zeros((BATCH, *pixels.shape[1:]), np.float32))
    return model, pixels


def predict_seconds(model, pixels: np.ndarray) -> float:
    """Time spent in predict_on_batch over `pixels` in batches of BATCH, the last one zero-padded."""
    seconds = 0.0
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start : start + BATCH]
        padded = np.zeros((BATCH, *batch.shape[1:]), np.float32)
        padded[: len(batch)] = batch
        began = time.perf_counter()
        model.predict_on_batch(padded)
        seconds += time.perf_counter() - began
    return seconds


def measure(tmp: Path, count: int) -> dict:
    paths = write_images(tmp / "images", count, np.random.default_rng(0))
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    init_project(tmp / "full", images=paths, classes=["a"], cwd=tmp)
    init_project(tmp / "quarter", images=paths[: count // 4], classes=["a"], cwd=tmp)
    model, pixels = load_model(paths)
    split = count // 2 // BATCH * BATCH  # the model-bound pass brackets the extract run, in whole batches
    before = predict_seconds(model, pixels[:split])
    full = run_extract(tmp / "full")
    model_rate = count / (before + predict_seconds(model, pixels[split:]))
    quarter = run_extract(tmp / "quarter")
    return {
        "images": count,
        "extract_rate": full["rate"],
        "extract_wall_s": full["wall_s"],
        "model_rate": model_rate,
        "ratio": full["rate"] / model_rate,
        "rss_full_mib": full["rss_mib"],
        "rss_quarter_mib": quarter["rss_mib"],
        "rss_ratio": full["rss_mib"] / quarter["rss_mib"],
        "quarter_images": count // 4,
    }


def print_figures(figures: dict) -> None:
    n, q = figures["images"], figures["quarter_images"]
    rows = {
        "extract_rate": f"patchwork extract, {n} images (img/s)",
        "extract_wall_s": "  its wall time, TF start-up included (s)",
        "model_rate": "model-bound predict_on_batch (img/s)",
        "ratio": "extract / model-bound",
        "rss_full_mib": f"peak RSS, {n} images (MiB)",
        "rss_quarter_mib": f"peak RSS, {q} images (MiB)",
        "rss_ratio": f"peak RSS {n} / {q}",
    }
    title = (
        f"extract benchmark: {n} JPEGs ~640x480, efficientnet_lite0 at 224x224, batch {BATCH}, {os.cpu_count()} CPUs"
    )
    print_table(title, rows, figures, TARGETS, digits=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patchwork-extract-bench-") as tmp:
        figures = measure(Path(tmp), args.images)
    if args.json:
        print(as_json(figures, TARGETS))
    else:
        print_figures(figures)


if __name__ == "__main__":
    main()
