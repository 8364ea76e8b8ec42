"""patchwork predict: class probabilities for image files, from a run or an exported model.

Images are decoded on threads ahead of the model (as extract does) and go through it
in fixed-size, zero-padded batches: one input shape means one traced graph, and an
image's probabilities do not depend on the images that shared its batch. Results come
back in input order, one at a time, so a caller can stream a million rows out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import runs
from .extraction import _fixed_batch_predictor, _prefetch
from .images import ImageError, load_image
from .sources import read_image_source, scan_directory


@dataclass
class Prediction:
    path: str
    probabilities: np.ndarray | None  # None when the image could not be read
    error: str | None = None


def image_paths(arguments: list[str], listed: str | None) -> list[str]:
    """The images to predict: arguments (directories expanded to their image files, sorted),
    then the paths listed in `listed` (a text file, a directory or - for stdin)."""
    paths = []
    for argument in arguments:
        paths.extend(scan_directory(Path(argument)) if Path(argument).is_dir() else [argument])
    if listed is not None:
        paths.extend(read_image_source(listed))
    return paths


def run_model(project, run_id: str | None):
    """The end-to-end model of a project's run (LATEST by default) and the run's classes."""
    from .deployment import end_to_end_model

    run_dir = runs.resolve_run(project.directory, run_id)
    return end_to_end_model(project, run_dir), runs.read_json(run_dir / runs.RUN_FILE)["classes"]


def exported_model(directory: Path):
    """The model of an `export`ed directory and its classes (from the model card)."""
    from .deployment import load_exported
    from .exporting import read_model_card

    classes = read_model_card(directory)["classes"]
    return load_exported(directory), classes


def predict(model, paths: list[str], batch_size: int = 32, progress: bool | None = None) -> Iterator[Prediction]:
    """A Prediction for each path, in order; unreadable images get probabilities None and the reason."""
    height, width, channels = (int(size) for size in model.input_shape[1:])
    decoded = _prefetch(
        lambda i: load_image(paths[i], (height, width), channels), iter(range(len(paths))), 2 * batch_size
    )
    predict_batch = _fixed_batch_predictor(model, batch_size, np.uint8)  # the exported model takes raw pixels
    pending: list[tuple[int, object]] = []  # in input order; decoded images and errors alike
    readable = 0
    with tqdm(total=len(paths), unit="img", desc="predict", disable=None if progress is None else not progress) as bar:
        for row, result in decoded:
            pending.append((row, result))
            readable += not isinstance(result, ImageError)
            if readable == batch_size:
                yield from _flush(predict_batch, paths, pending)
                bar.update(len(pending))
                pending, readable = [], 0
        yield from _flush(predict_batch, paths, pending)
        bar.update(len(pending))


def _flush(predict_batch, paths, pending) -> Iterator[Prediction]:
    images = [r for _, r in pending if not isinstance(r, ImageError)]
    probabilities = iter(predict_batch(np.stack(images)) if images else [])
    for row, result in pending:
        if isinstance(result, ImageError):
            yield Prediction(paths[row], None, str(result))
        else:
            yield Prediction(paths[row], next(probabilities))
