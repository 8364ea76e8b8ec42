"""Benchmark of `patchwork extract` on each runtime: what each stage costs, the bound that puts on
extract on this machine's cores, how near extract comes to it, the ratios to plain Keras, memory,
disk, and what `precision: fast` costs in accuracy.

Setup (untimed): --images real JPEGs (photographs from skimage.data, randomly cropped,
flipped and resized to about 640x480, quality 90) in a temp dir, one project over all of
them for each mode, and one over the first quarter (default config: efficientnet_lite0,
224x224, feature maps as float16, batch 32). The modes: `runtime: keras` (the baseline:
what patchwork did before runtimes), `litert` and `openvino` (both exact) and
`precision: fast` with `runtime: auto` (OpenVINO in bfloat16 where the CPU has it; elsewhere
it falls back to exact features, as the table's "fast resolves to" row says). Then, in one run:

- the core-milliseconds per image (CPU time of this whole process, every thread counted, not wall
  time) of the three stages of extract, each on its own, per mode; half of each stage's work is
  measured just before the mode's extract and half just after (a shared VM's CPU speed drifts by
  10% and more within a minute):
  - engine: the mode's engine as extract opens it (the same threads), on every image decoded into
    memory first, in batches of 32 after warm-up batches; their wall time gives the engine-alone rate.
  - decoder: util/image_files.read_image_file (what extract's decoding threads do: read, digest,
    decode, thumbnail) of DECODE_SAMPLE of the JPEGs at 224x224, one thread.
  - writer: what extract's writer thread does with a chunk (extraction/chunks.write_chunk: the cast
    to float16, the pooled copy, zstd, zarr's writes) for the mode's own float32 outputs on the
    first WRITE_SAMPLE images, in whole chunks of a scratch store.
- the bound: a machine of C cores (the cores this process may use) cannot extract faster than
  C * 1000 / (engine + decoder + writer core-ms) images a second, however the stages overlap.
- `patchwork extract --json` on the mode's project as a subprocess: its own
  images_per_second (start-up, model building and the engine's compilation excluded),
  and the peak RSS by GNU time's %M (the kernel's high-water mark of the child alone).
- the ratios: each mode's extract against its bound (target >= 0.85, issue [16]), and against the
  keras extract (targets: the default exact mode >= 1.8x, fast >= 3x).
- memory flat: the full project's peak RSS within 1.15x of the quarter project's.
- disk: the store's bytes per image on these JPEGs, feature maps and their pooled copy.
- accuracy of fast features (--accuracy-images, default 1,797: scikit-learn's digits as
  PNGs): 5-fold logistic-regression accuracy on pooled features, exact against fast. Where
  the CPU has no bfloat16 (OpenVINO's fast mode cannot run), fast is emulated by Keras'
  mixed_bfloat16 policy, said in the table.

- steal: the share of the machine's CPU time its VM host took during each extract (/proc/stat):
  the stages' core-ms are CPU time, which steal does not lengthen, while extract's rate is wall
  time, which it does; a mode's ratio to its bound is only meaningful with little steal.

The title names the CPU (lscpu's model name, and its bfloat16 instructions). Exit code 0 whatever
the verdicts. Run it on an otherwise idle machine: other load takes cores from extract, not from
the bound.

    .venv/bin/python benchmarks/extract_bench.py [--images N] [--accuracy-images N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from report import as_json, print_table
from skimage import data

from patchwork_cli.store.features import DONE, FeatureStore
from patchwork_cli.store.project import init_project

CLI = Path(sys.executable).parent / "patchwork"
SOURCES = "chelsea coffee astronaut rocket camera immunohistochemistry hubble_deep_field retina coins moon cell"
IMSHAPE, BATCH = (224, 224), 32
DECODE_SAMPLE = 256  # images decoded to measure the decoder's cost
WRITE_SAMPLE = 256  # images (4 whole chunks of 64 7x7x1280 maps) written to measure the writer's
MODES = {  # name: (runtime, precision)
    "keras": ("keras", "exact"),
    "litert": ("litert", "exact"),
    "openvino": ("openvino", "exact"),
    "fast": ("auto", "fast"),
}
DEFAULT_MODE = "litert"  # what runtime: auto, precision: exact resolves to with both engines installed
TARGETS = {
    **{f"{mode}_vs_bound": (">= 0.85", lambda v: v >= 0.85) for mode in MODES},
    "default_vs_keras": (">= 1.8x", lambda v: v >= 1.8),
    "fast_vs_keras": (">= 3x", lambda v: v >= 3.0),
    "rss_ratio": ("<= 1.15x", lambda v: v <= 1.15),
}


def write_images(directory: Path, count: int, rng: np.random.Generator) -> list[str]:
    """`count` JPEGs: a random crop (60-100% per side) of a random photograph, maybe flipped, ~640x480."""
    photos = [getattr(data, name)() for name in SOURCES.split()]
    photos = [np.stack([p] * 3, -1) if p.ndim == 2 else p[..., :3] for p in photos]
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


def make_project(directory: Path, paths: list[str], runtime: str, precision: str, cwd: Path) -> Path:
    init_project(directory, images=paths, classes=["a"], cwd=cwd)
    config_path = directory / "patchwork.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["extractor"].update(runtime=runtime, precision=precision)
    config_path.write_text(yaml.safe_dump(config))
    return directory


def run_extract(project: Path) -> dict:
    """`patchwork extract --json` on `project`: its report and the child's peak RSS."""
    rss_file = project.with_suffix(".maxrss")
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), CLI, "--project", project, "extract", "--json"]
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"patchwork extract failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return {**json.loads(child.stdout), "rss_mib": int(rss_file.read_text().split()[-1]) / 1024}


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the machine's CPUs so far (/proc/stat): a VM's host taking cores."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time the host took from this VM between two cpu_ticks(): an extract's wall
    rate falls with it while the stages' core-ms (CPU time) do not, so a run with more than a few
    per cent says more about the host than about extract."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def engine_pass(engine, pixels: np.ndarray) -> tuple[float, float]:
    """(wall seconds, CPU seconds) in the engine over `pixels` in batches of BATCH, the last one zero-padded."""
    wall = cpu = 0.0
    for start in range(0, len(pixels), BATCH):
        began, began_cpu = time.perf_counter(), time.process_time()
        engine.predict(pixels[start : start + BATCH])
        wall, cpu = wall + time.perf_counter() - began, cpu + time.process_time() - began_cpu
    return wall, cpu


def core_ms(work, count: int) -> float:
    """The CPU time of this process (all its threads: zarr's own included) over `work()`, in ms per item."""
    began = time.process_time()
    work()
    return (time.process_time() - began) * 1000 / count


def decoder_core_ms(paths: list[str]) -> float:
    from patchwork_cli.util.image_files import read_image_file

    return core_ms(lambda: [read_image_file(path, IMSHAPE, 3) for path in paths], len(paths))


def writer_core_ms(directory: Path, maps: np.ndarray) -> float:
    """The writer thread's CPU per image (chunks.write_chunk: the cast to float16, the pooled copy,
    zstd and zarr's writes) for `maps`, the engine's float32 outputs, in whole chunks of a new store
    laid out as extract's is."""
    from patchwork_cli.extraction.chunks import write_chunk

    store = FeatureStore.create(directory, [str(i) for i in range(len(maps))], maps.shape[1:], "float16", {})
    whole = len(maps) // store.chunk_rows * store.chunk_rows or len(maps)

    def write() -> None:
        for index in range(-(-whole // store.chunk_rows)):
            start, stop = index * store.chunk_rows, min(whole, (index + 1) * store.chunk_rows)
            write_chunk(store, index, maps[start:stop], np.full(stop - start, DONE, np.uint8), [""] * (stop - start))

    return core_ms(write, whole)


def stage_costs(engine, pixels: np.ndarray, paths: list[str], maps: np.ndarray, scratch: Path) -> dict:
    """Each stage on its own: the engine's wall and CPU seconds over `pixels`, the decoder's and the
    writer's core-ms per image on `paths` and `maps`."""
    wall, cpu = engine_pass(engine, pixels)
    return {"wall": wall, "cpu": cpu, "decoder": decoder_core_ms(paths), "writer": writer_core_ms(scratch, maps)}


def cpu_model() -> str:
    """lscpu's model name and the CPU's bfloat16 instructions (what `precision: fast` needs)."""
    try:
        described = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU (no lscpu)"
    fields = dict(line.split(":", 1) for line in described.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    bfloat16 = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    return f"{fields.get('Model name', '?').strip()} ({', '.join(bfloat16) or 'no bfloat16'})"


def store_bytes_per_image(project: Path, images: int) -> dict:
    store = project / "features.zarr"
    size = {
        name: sum(f.stat().st_size for f in (store / name).rglob("*") if f.is_file()) for name in ("features", "pooled")
    }
    return {"maps_kib": size["features"] / images / 1024, "pooled_kib": size["pooled"] / images / 1024}


def measure_speed(tmp: Path, count: int) -> dict:
    from patchwork_cli.extractors.loading import load_extractor
    from patchwork_cli.extractors.runtimes import choose_runtime, cpu_threads, open_extractor_engine
    from patchwork_cli.util.images import load_image

    paths = write_images(tmp / "images", count, np.random.default_rng(0))
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    extractor = load_extractor("efficientnet_lite0", IMSHAPE)
    pixels = np.stack([load_image(path, IMSHAPE) for path in paths])
    split = count // 2 // BATCH * BATCH  # the engine-bound pass brackets the extract run, in whole batches
    cores = cpu_threads()
    figures: dict = {"images": count, "quarter_images": count // 4, "cores": cores, "cpu": cpu_model()}
    for mode, (runtime, precision) in MODES.items():
        project = make_project(tmp / mode, paths, runtime, precision, tmp)
        engine = open_extractor_engine(extractor, choose_runtime(runtime, precision), BATCH)
        maps = np.concatenate([engine.predict(pixels[i : i + BATCH]) for i in range(0, WRITE_SAMPLE, BATCH)])
        half = DECODE_SAMPLE // 2  # each stage measured half before the extract, half after
        before = stage_costs(engine, pixels[:split], paths[:half], maps, tmp / f"{mode}-before.zarr")
        stolen_before = cpu_ticks()
        report = run_extract(project)
        figures[f"{mode}_steal"] = steal_share(stolen_before, cpu_ticks())
        after = stage_costs(engine, pixels[split:], paths[half:DECODE_SAMPLE], maps, tmp / f"{mode}-after.zarr")
        figures[f"{mode}_engine_ms"] = (before["cpu"] + after["cpu"]) * 1000 / count
        figures[f"{mode}_engine"] = count / (before["wall"] + after["wall"])
        for stage in ("decoder", "writer"):
            figures[f"{mode}_{stage}_ms"] = (before[stage] + after[stage]) / 2
        stages = sum(figures[f"{mode}_{stage}_ms"] for stage in ("engine", "decoder", "writer"))
        figures[f"{mode}_bound"] = cores * 1000 / stages
        figures[f"{mode}_extract"] = report["images_per_second"]
        figures[f"{mode}_vs_bound"] = figures[f"{mode}_extract"] / figures[f"{mode}_bound"]
        figures[f"{mode}_rss_mib"] = report["rss_mib"]
        figures[f"{mode}_resolved"] = f"{report['runtime']} {report['precision']}"
        if mode == DEFAULT_MODE:
            figures.update(store_bytes_per_image(project, count))
        del engine
    quarter = run_extract(make_project(tmp / "quarter", paths[: count // 4], "auto", "exact", tmp))
    figures["quarter_rss_mib"] = quarter["rss_mib"]
    figures["rss_ratio"] = figures[f"{DEFAULT_MODE}_rss_mib"] / quarter["rss_mib"]
    figures["default_vs_keras"] = figures[f"{DEFAULT_MODE}_extract"] / figures["keras_extract"]
    figures["fast_vs_keras"] = figures["fast_extract"] / figures["keras_extract"]
    return figures


def measure_fast_accuracy(count: int) -> dict:
    """5-fold logistic-regression accuracy on pooled features of scikit-learn's digits, exact
    features against fast ones (OpenVINO bfloat16, or Keras mixed_bfloat16 where the CPU lacks it)."""
    import keras
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from patchwork_cli.extractors.engine_openvino import has_bfloat16
    from patchwork_cli.extractors.loading import load_extractor
    from patchwork_cli.extractors.runtimes import choose_runtime, open_extractor_engine

    digits = load_digits()
    scans = (digits.images[:count] * (255 / 16)).astype(np.uint8)
    pixels = np.stack([np.asarray(Image.fromarray(s).convert("RGB").resize(IMSHAPE, Image.BILINEAR)) for s in scans])
    pixels = pixels.astype(np.float32)
    target = digits.target[:count]

    def features_of(engine_predict) -> np.ndarray:
        return np.concatenate([engine_predict(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)])

    extractor = load_extractor("efficientnet_lite0", IMSHAPE, "avg")
    exact = features_of(open_extractor_engine(extractor, choose_runtime("auto", "exact"), BATCH).predict)
    if has_bfloat16():
        fast_engine = open_extractor_engine(extractor, choose_runtime("openvino", "fast"), BATCH)
        fast, how = features_of(fast_engine.predict), "OpenVINO bfloat16"
    else:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            emulated = load_extractor("efficientnet_lite0", IMSHAPE, "avg").model
            fast = features_of(lambda batch: np.asarray(emulated.predict_on_batch(batch), np.float32))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        how = "Keras mixed_bfloat16 (emulated: this CPU has no bfloat16)"

    def probe(features: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return float(cross_val_score(model, features, target, cv=5).mean())

    cosine = (exact * fast).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
    return {
        "accuracy_images": count,
        "accuracy_exact": probe(exact),
        "accuracy_fast": probe(fast),
        "fast_min_cosine": float(cosine.min()),
        "fast_how": how,
    }


def print_figures(figures: dict) -> None:
    n, q = figures["images"], figures["quarter_images"]
    rows = {}
    cores = figures["cores"]
    for mode in MODES:
        rows[f"{mode}_engine_ms"] = f"{mode}: engine core-ms per image"
        rows[f"{mode}_decoder_ms"] = f"{mode}: decoder core-ms per image"
        rows[f"{mode}_writer_ms"] = f"{mode}: writer core-ms per image"
        rows[f"{mode}_bound"] = f"{mode}: bound, {cores} cores / their sum (img/s)"
        rows[f"{mode}_engine"] = f"{mode}: engine alone on decoded tensors (img/s)"
        rows[f"{mode}_extract"] = f"{mode}: patchwork extract end to end (img/s)"
        rows[f"{mode}_vs_bound"] = f"{mode}: extract / bound"
        rows[f"{mode}_steal"] = f"{mode}: CPU taken by the VM's host during extract (share)"
    rows |= {
        "default_vs_keras": f"default ({DEFAULT_MODE}, exact) extract / keras extract",
        "fast_vs_keras": "precision fast extract / keras extract",
        f"{DEFAULT_MODE}_rss_mib": f"peak RSS, {n} images, default (MiB)",
        "quarter_rss_mib": f"peak RSS, {q} images, default (MiB)",
        "rss_ratio": f"peak RSS {n} / {q}",
        "maps_kib": "store: 7x7x1280 float16 maps per image (KiB)",
        "pooled_kib": "store: their pooled float32 copy per image (KiB)",
    }
    if "accuracy_exact" in figures:
        rows |= {
            "accuracy_exact": f"digits linear probe, exact features ({figures['accuracy_images']} images, 5-fold)",
            "accuracy_fast": "digits linear probe, fast features",
            "fast_min_cosine": "fast against exact: minimum cosine",
        }
    title = (
        f"extract benchmark: {n} JPEGs ~640x480, efficientnet_lite0 at 224x224, batch {BATCH}, "
        f"{cores} cores of {figures['cpu']}"
    )
    print_table(title, rows, figures, TARGETS, digits=2)
    print(
        f"fast resolves to: {figures['fast_resolved']}"
        + (f"; accuracy: {figures['fast_how']}" if "fast_how" in figures else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--accuracy-images", type=int, default=1797, help="0 skips the accuracy of fast features")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    from patchwork_cli.util.tensorflow_runtime import start_tensorflow

    start_tensorflow()
    with tempfile.TemporaryDirectory(prefix="patchwork-extract-bench-") as tmp:
        figures = measure_speed(Path(tmp), args.images)
    if args.accuracy_images:
        figures |= measure_fast_accuracy(args.accuracy_images)
    if args.json:
        print(as_json(figures, TARGETS))
    else:
        print_figures(figures)


if __name__ == "__main__":
    main()
