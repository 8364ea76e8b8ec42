"""Benchmark of `patchwork train`: time per epoch against plain Keras, and the memory of
the prediction pass as the project grows.

In one run:

- Epoch time. A project of --labelled rows of rank-4 features (7x7x256, float16, in a
  zarr store), every row labelled for 3 classes, head conv:64,r, batches_per_epoch set
  to one pass over the rows. `patchwork train` (a subprocess) records each epoch's wall
  time in its history.csv; beside it, plain Keras: the same model
  (patchwork_cli.modeling.heads.build_model) compiled with the same loss and optimizer,
  `model.fit` on the same rows as in-memory float32 arrays, same batch size, one pass
  per epoch. Median over epochs 2.. (epoch 1 compiles).
  Target: patchwork / plain Keras <= 1.2.
- Prediction memory. Projects of 50,000 and 200,000 rows of 4x4x64 feature maps, 500
  of them labelled; `patchwork train` with one short epoch, so the run is dominated by
  predicting every row into the run's zarr arrays. Peak RSS of each child comes from
  os.wait4 (the kernel's high-water mark for that one child). Target: the 200,000-row
  peak within 1.15x of the 50,000-row peak (memory flat in rows).
- The prediction pass over --maps-rows rows (default 200,000) of 7x7x1280 float16 feature
  maps (the default extractor's output) with the default head (pool:avg): before, reading
  the maps; after, reading the store's pooled (N, 1280) copy. Same trained head, same
  store, wall time of each pass, and the largest difference between their predictions.

    .venv/bin/python benchmarks/train_bench.py [--labelled N] [--maps-rows N] [--json]
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
import pandas as pd
import yaml

from patchwork_cli.store.features import DONE, FeatureStore
from patchwork_cli.store.project import FEATURES_NAME, init_project, open_project

CLI = Path(sys.executable).parent / "patchwork"
CLASSES = ["a", "b", "c"]
EPOCHS, BATCH = 6, 32
HEAD = "conv:64,r"


def make_project(directory: Path, rows: int, row_shape: tuple, labelled: int, epochs: int, steps: int) -> Path:
    """A project of `rows` images whose features are random maps; the first `labelled` rows labelled."""
    project, _ = init_project(
        directory, images=[f"img/{i:07d}.jpg" for i in range(rows)], classes=CLASSES, cwd=directory
    )
    config = yaml.safe_load(project.config_path.read_text())
    config["model"]["head"] = HEAD
    config["training"].update(epochs=epochs, batches_per_epoch=steps, batch_size=BATCH, patience=None)
    project.config_path.write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(0)
    identity = {"name": "random", "output_shape": list(row_shape)}
    filepaths = project.labels()["filepath"].tolist()
    store = FeatureStore.create(directory / FEATURES_NAME, filepaths, row_shape, "float16", identity)
    for index in range(store.chunk_count):
        start, stop = store.chunk_bounds(index)
        store.write_chunk(
            index,
            rng.normal(size=(stop - start, *row_shape)).astype(np.float16),
            np.full(stop - start, DONE, np.uint8),
            [""] * (stop - start),
        )
    labels = rng.integers(0, 2, (labelled, len(CLASSES)))
    project.edit_labels(
        (f"img/{i:07d}.jpg", dict(zip(CLASSES, map(int, labels[i]), strict=True))) for i in range(labelled)
    )
    project.compact()
    return directory


def prediction_pass_seconds(directory: Path, rows: int) -> dict:
    """train's prediction pass over `rows` rows of 7x7x1280 maps, from the maps and from their pooled copy."""
    from patchwork_cli.util.tensorflow_runtime import start_tensorflow

    start_tensorflow()
    from patchwork_cli.modeling.heads import build_model, embedding_model
    from patchwork_cli.store.config import ModelConfig
    from patchwork_cli.training.prediction import predict_all

    filepaths = [f"img/{i:07d}.jpg" for i in range(rows)]
    store = FeatureStore.create(directory / FEATURES_NAME, filepaths, (7, 7, 1280), "float16", {"name": "random"})
    rng = np.random.default_rng(0)
    block = np.maximum(rng.normal(size=(store.chunk_rows * 8, 7, 7, 1280)), 0).astype(np.float16)
    for index in range(store.chunk_count):  # a rotating block of ReLU-like maps: fast to make, real to read
        start, stop = store.chunk_bounds(index)
        offset = (index * store.chunk_rows) % len(block)
        maps = np.roll(block, -offset, axis=0)[: stop - start]
        store.write_chunk(index, maps, np.full(stop - start, DONE, np.uint8), [""] * (stop - start))
    model = build_model((7, 7, 1280), len(CLASSES), ModelConfig())
    has_features = np.ones(rows, bool)
    seconds, predictions = {}, {}
    for from_average in (False, True):
        run_dir = directory / f"run-{from_average}"
        run_dir.mkdir()
        started = time.perf_counter()
        predictions[from_average] = predict_all(
            embedding_model(model, from_average), store, rows, has_features, run_dir, from_average
        )
        seconds[from_average] = time.perf_counter() - started
    return {
        "predict_maps_s": seconds[False],
        "predict_pooled_s": seconds[True],
        "predict_speedup": seconds[False] / seconds[True],
        "predict_max_abs_diff": float(np.abs(predictions[False] - predictions[True]).max()),
    }


def run_train(directory: Path) -> tuple[dict, float]:
    """`patchwork train --json` as a child: its report and its peak RSS in MiB."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen([str(CLI), "--project", str(directory), "train", "--json"], stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"patchwork train failed:\n{err.read().decode()[-2000:]}")
        return json.loads(out.read()), usage.ru_maxrss / 1024


def patchwork_epoch_seconds(directory: Path) -> float:
    report, _ = run_train(directory)
    history = pd.read_csv(directory / "models" / report["run_id"] / "history.csv")
    return statistics.median(history["seconds"].iloc[1:])


def keras_epoch_seconds(directory: Path) -> float:
    """The same model and data through plain model.fit on in-memory arrays."""
    from patchwork_cli.util.tensorflow_runtime import start_tensorflow

    start_tensorflow()
    import keras

    from patchwork_cli.modeling.heads import build_model
    from patchwork_cli.modeling.losses import masked_loss
    from patchwork_cli.training.keras_head import epoch_timer

    project = open_project(directory)
    table = project.labels()
    rows = np.flatnonzero(table[CLASSES].notna().any(axis=1).to_numpy())
    store = FeatureStore.open(directory / FEATURES_NAME)
    x = np.asarray(store.features.get_orthogonal_selection((rows,)), np.float32)
    y = table[CLASSES].to_numpy(np.float32)[rows]
    keras.utils.set_random_seed(0)
    model = build_model(store.row_shape, len(CLASSES), project.config.model)
    model.compile(
        optimizer=keras.optimizers.Adam(project.config.training.learning_rate), loss=masked_loss(project.config.model)
    )
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[epoch_timer()])
    return statistics.median(history.history["seconds"][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=int, default=2048)
    parser.add_argument("--maps-rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        epochs = make_project(
            Path(tmp) / "epochs", args.labelled, (7, 7, 256), args.labelled, EPOCHS, -(-args.labelled // BATCH)
        )
        ours, plain = patchwork_epoch_seconds(epochs), keras_epoch_seconds(epochs)
        peaks = {}
        for rows in (50_000, 200_000):
            directory = make_project(Path(tmp) / f"rows{rows}", rows, (4, 4, 64), 500, 1, 5)
            started = time.perf_counter()
            peaks[rows] = run_train(directory)[1], time.perf_counter() - started
        (Path(tmp) / "maps").mkdir()
        passes = prediction_pass_seconds(Path(tmp) / "maps", args.maps_rows)
    figures = {
        "epoch_s_patchwork": ours,
        "epoch_s_keras_fit": plain,
        "epoch_ratio": ours / plain,
        "peak_mib_50k_rows": peaks[50_000][0],
        "peak_mib_200k_rows": peaks[200_000][0],
        "peak_ratio_200k_50k": peaks[200_000][0] / peaks[50_000][0],
        "train_wall_s_200k_rows": peaks[200_000][1],
        **passes,
    }
    verdicts = {
        "epoch_ratio": figures["epoch_ratio"] <= 1.2,
        "peak_ratio_200k_50k": figures["peak_ratio_200k_50k"] <= 1.15,
    }
    if args.json:
        print(json.dumps({"figures": figures, "pass": verdicts}, indent=2))
        return
    print(
        f"train benchmark: {args.labelled} labelled rows of 7x7x256 features, head {HEAD}, "
        f"one pass in batches of {BATCH} per epoch; prediction pass over {args.maps_rows:,} rows of "
        "7x7x1280 maps with head pool:avg"
    )
    targets = {"epoch_ratio": "<= 1.2", "peak_ratio_200k_50k": "<= 1.15"}
    for name, value in figures.items():
        verdict = ("PASS" if verdicts[name] else "FAIL") if name in verdicts else ""
        print(f"{name:<26} {value:>10.3f}  {targets.get(name, ''):<8} {verdict}")


if __name__ == "__main__":
    main()
