"""patchwork predict: class probabilities for image files, from a run or an exported model.

Both run on the fastest engine here (extractors/runtimes.py). A project's run puts its
extractor on the project's extractor.runtime and precision -- as extract does, so the
run's head sees the features it was trained on -- and its head on Keras behind it; an
exported model runs its model.tflite on LiteRT (or OpenVINO), and model.keras on Keras
when it has no model.tflite (exported by an older patchwork) or no engine is installed.
Images are decoded on threads ahead of the model (as extract does) and go through it in
fixed-size, zero-padded batches: an image's probabilities do not depend on the images
that shared its batch. Results come back in input order, one at a time, so a caller can
stream a million rows out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from patchwork_cli.extraction.chunks import prefetch
from patchwork_cli.store import runs
from patchwork_cli.store.sources import read_image_source, scan_directory
from patchwork_cli.util.images import ImageError, load_image

if TYPE_CHECKING:
    from patchwork_cli.store.project import Project


@dataclass
class Prediction:
    path: str
    probabilities: np.ndarray | None  # None when the image could not be read
    error: str | None = None


@dataclass
class Predictor:
    """What predicts: uint8 images of `shape` (height, width, channels) in, `classes` probabilities out."""

    classes: list[str]
    shape: tuple[int, int, int]
    batch_size: int
    predict_batch: Callable[[np.ndarray], np.ndarray]  # up to batch_size images -> their probabilities
    runs_on: str  # what runs where, for the person
    note: str = ""  # what was given up to run here ("" when nothing was)


def image_paths(arguments: list[str], listed: str | None) -> list[str]:
    """The images to predict: arguments (directories expanded to their image files, sorted),
    then the paths listed in `listed` (a text file, a directory or - for stdin)."""
    paths = []
    for argument in arguments:
        paths.extend(scan_directory(Path(argument)) if Path(argument).is_dir() else [argument])
    if listed is not None:
        paths.extend(read_image_source(listed))
    return paths


def run_predictor(project: Project, *, run_id: str | None = None, batch_size: int) -> Predictor:
    """A project's run (LATEST by default): its extractor on the project's runtime, then its head on
    Keras, from the extractor's outputs rounded to the store's dtype as its training features were."""
    from patchwork_cli.deploy.model import require_model, run_extractor
    from patchwork_cli.extractors.runtimes import choose_runtime, keras_engine, open_extractor_engine

    run_dir = runs.resolve_run(project.directory, run_id)
    require_model(
        run_dir,
        wanted="predict with",
        hint="it predicts the project's own images only (patchwork export --what predictions); to predict others, "
        "train a model (patchwork train --head pool:avg)",
    )
    extractor, identity = run_extractor(project, run_dir)  # TensorFlow starts here
    import keras

    settings = project.config.extractor
    extract = open_extractor_engine(extractor, choose_runtime(settings.runtime, settings.precision), batch_size)
    head = keras_engine(keras.models.load_model(run_dir / runs.MODEL_FILE, compile=False), batch_size)
    store_dtype = np.dtype(identity["dtype"])

    def predict_batch(pixels: np.ndarray) -> np.ndarray:
        return head.predict(extract.predict(pixels).astype(store_dtype))

    return Predictor(
        runs.RunRecord.read(run_dir).classes,
        (*extractor.imshape, extractor.channels),
        batch_size,
        predict_batch,
        f"the extractor on {extract.description}, the head on keras",
        extract.note,
    )


def exported_predictor(directory: Path, *, batch_size: int) -> Predictor:
    """An `export`ed directory: its model.tflite on the engine `auto` picks for exact outputs, else
    its model.keras on Keras (the model card gives the classes and the input shape)."""
    from patchwork_cli.deploy.export import read_model_card
    from patchwork_cli.deploy.model import KERAS_FILE, TFLITE_FILE, load_exported
    from patchwork_cli.extractors.conversion import TFLITE_SUFFIX
    from patchwork_cli.extractors.runtimes import EXACT, choose_runtime, keras_engine, open_file

    card = read_model_card(directory)
    recorded = card.get("tflite", {})  # what export said of model.tflite (cards before it say nothing)
    tflite = Path(directory) / TFLITE_FILE
    choice = choose_runtime("auto", EXACT)
    if tflite.is_file() and choice.file == TFLITE_SUFFIX:
        engine, runs_on = open_file(str(tflite), choice, batch_size), f"{TFLITE_FILE} on {choice.runtime}"
        note = ""
        if "file" in recorded and not recorded["checked_on"]:
            note = f"{TFLITE_FILE} was not checked against {KERAS_FILE} when exported (no inference engine there)"
    else:
        engine = keras_engine(load_exported(directory), batch_size, np.uint8)  # the exported model takes raw pixels
        runs_on = f"{KERAS_FILE} on keras"
        why = (
            "no inference engine installed (pip install ai-edge-litert)"
            if tflite.is_file()
            else recorded.get("note", f"no {TFLITE_FILE} (exported by an older patchwork)")
        )
        note = f"{why}: Keras runs {KERAS_FILE}"
    return Predictor(card["classes"], tuple(card["input"]["shape"]), batch_size, engine.predict, runs_on, note)


def predict(predictor: Predictor, paths: list[str], *, progress: bool | None = None) -> Iterator[Prediction]:
    """A Prediction for each path, in order; unreadable images get probabilities None and the reason."""
    height, width, channels = predictor.shape
    batch_size = predictor.batch_size
    decoded = prefetch(
        lambda i: load_image(paths[i], (height, width), channels), iter(range(len(paths))), 2 * batch_size
    )
    pending: list[tuple[int, object]] = []  # in input order; decoded images and errors alike
    readable = 0
    with tqdm(total=len(paths), unit="img", desc="predict", disable=None if progress is None else not progress) as bar:
        for row, result in decoded:
            pending.append((row, result))
            readable += not isinstance(result, ImageError)
            if readable == batch_size:
                yield from _flush(predictor.predict_batch, paths, pending)
                bar.update(len(pending))
                pending, readable = [], 0
        yield from _flush(predictor.predict_batch, paths, pending)
        bar.update(len(pending))


def _flush(predict_batch, paths, pending) -> Iterator[Prediction]:
    images = [r for _, r in pending if not isinstance(r, ImageError)]
    probabilities = iter(predict_batch(np.stack(images)) if images else [])
    for row, result in pending:
        if isinstance(result, ImageError):
            yield Prediction(paths[row], None, str(result))
        else:
            yield Prediction(paths[row], next(probabilities))
