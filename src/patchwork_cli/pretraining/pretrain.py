"""patchwork pretrain: adapt the extractor to the project's own images, without labels (SimCLR).

The method, SimCLR, is in pretraining/simclr.py; this module runs the command: the images,
the starting backbone, the training loop, and the directory a pretrain lives in.

Starts from the configured extractor (default the bundled EfficientNet-Lite0, or a
size-agnostic .keras model such as an earlier pretrain's). The result, extractor.keras, is a
Keras model of the same kind: pixels 0..255 of any size in, feature maps out, preprocessing
inside, so `patchwork extract --model PATH --overwrite` takes it.

models/pretrain-<id>/ holds one pretrain: settings.json (what a resume must match),
checkpoint.npz (after each epoch: the weights of backbone and projection head, the optimizer's
variables and the epoch, replaced atomically), loss.csv and loss.png, and finally extractor.keras
(written under a temporary name, then os.replace-d). A pretrain started again with the same
settings continues the newest directory without an extractor.keras from its checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.pretraining.simclr import (
    KNN_K,
    augment,
    is_grey,
    knn_accuracy,
    nt_xent,
    pooled_features,
    projection_head,
)
from patchwork_cli.store import runs
from patchwork_cli.store.config import PretrainConfig, out_of_bounds
from patchwork_cli.store.label_schema import EXCLUDE, FILEPATH, VALIDATION
from patchwork_cli.store.project import Project
from patchwork_cli.util.atomic import atomic_keras_save, atomic_write, atomic_write_text
from patchwork_cli.util.images import ImageError, load_image
from patchwork_cli.util.locking import sole_holder

log = logging.getLogger("patchwork")

PREFIX = "pretrain-"
SETTINGS_FILE = "settings.json"
CHECKPOINT_FILE = "checkpoint.npz"
LOSS_FILE = "loss.csv"
PLOT_FILE = "loss.png"
EXTRACTOR_FILE = "extractor.keras"
LOCK_FILE = ".lock"
LOSS_COLUMNS = ("epoch", "loss", "seconds", "knn_accuracy")


@dataclass
class PretrainReport:
    directory: Path
    extractor_path: Path
    epochs: int
    resumed_from: int
    images: int
    seconds: float
    grey: bool
    last_loss: float
    knn_accuracy: float | None


def settings_of(project: Project, options: PretrainConfig) -> dict:
    """What a resumed pretrain must share with the one it continues."""
    return {"extractor": project.config.extractor.name, **asdict(options)}


# --- directories ----------------------------------------------------------------------------


def pretrain_dirs(project_dir: Path) -> list[Path]:
    """The pretrain directories, oldest first (their ids sort by time)."""
    models = runs.models_dir(project_dir)
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def resumable_dir(project_dir: Path, settings: dict) -> Path | None:
    """The newest unfinished pretrain directory, if it was started with `settings`."""
    unfinished = [p for p in pretrain_dirs(project_dir) if not (p / EXTRACTOR_FILE).exists()]
    if not unfinished:
        return None
    newest = unfinished[-1]
    try:
        recorded = json.loads((newest / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return newest if recorded == settings else None


# --- the images -----------------------------------------------------------------------------


def load_images(project: Project, size: int, channels: int, progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Every not-excluded image decoded at size x size (uint8, N x size x size x channels), and the
    labels.csv row of each; undecodable images are skipped with a warning.

    Decoded once and kept in memory (N * size^2 * 3 bytes: 140 MB for 5,000 images at 96), since
    every epoch crops them anew; augmenting from the cache costs far less than decoding again.
    """
    from tqdm import tqdm

    table = project.labels()
    rows = np.flatnonzero(~table[EXCLUDE].to_numpy(bool))
    filepaths = table[FILEPATH].tolist()
    pixels, kept, failed = [], [], []
    for row in tqdm(rows, desc="decode", unit="img", disable=None if progress is None else not progress):
        try:
            pixels.append(load_image(project.absolute_path(filepaths[row]), (size, size), channels))
            kept.append(row)
        except ImageError as error:
            failed.append((filepaths[row], str(error)))
    if failed:
        log.warning(f"{len(failed)} image(s) could not be read and are left out, first: {failed[0][0]}: {failed[0][1]}")
    if len(kept) < 2:
        raise PatchworkError(f"pretrain needs at least 2 readable images, the project has {len(kept)}")
    return np.stack(pixels), np.array(kept)


def validation_classes(project: Project, rows: np.ndarray) -> np.ndarray:
    """For the kNN accuracy: per loaded image, the index of its one class when it is a validation
    image labelled with exactly one class (a 1), else -1."""
    table = project.labels()
    labels = table[project.classes].to_numpy(np.float64)[rows]
    validation = table[VALIDATION].to_numpy(bool)[rows]
    ones = labels == 1
    single = validation & (ones.sum(axis=1) == 1)
    return np.where(single, ones.argmax(axis=1), -1)


# --- the starting backbone ------------------------------------------------------------------


def starting_backbone(project: Project):
    """The configured extractor as a size-agnostic Keras model (pixels 0..255 -> feature maps)."""
    import keras

    from patchwork_cli.extractors.loading import DEFAULT

    name = project.config.extractor.name
    if name == DEFAULT:
        from patchwork_cli.extractors.efficientnet_lite0 import build_efficientnet_lite0

        return build_efficientnet_lite0(False, (None, None, 3))
    path = project.directory / name
    if path.suffix != ".keras" or not path.is_file():
        raise PatchworkError(
            f"extractor.name: pretrain starts from {DEFAULT} or a .keras model file, not {name!r}; "
            f"set extractor.name: {DEFAULT} to adapt the bundled one"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise PatchworkError(f"{path}: not a Keras model Keras can load ({type(error).__name__}: {error})") from None
    shape = model.input_shape
    if not (isinstance(shape, tuple) and len(shape) == 4 and shape[1:3] == (None, None) and shape[3] in (1, 3)):
        raise PatchworkError(
            f"{path}: pretrain needs a model taking images of any size, input (None, None, 1 or 3); got {shape}"
        )
    return model


# --- checkpoints ----------------------------------------------------------------------------


def save_checkpoint(directory: Path, epoch: int, variables: list, optimizer_variables: list) -> None:
    arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer_variables)})
    arrays["epoch"] = np.array(epoch)
    with atomic_write(directory / CHECKPOINT_FILE, "wb", encoding=None) as handle:
        np.savez(handle, **arrays)


def load_checkpoint(directory: Path, variables: list, optimizer_variables: list) -> int:
    """Restore the checkpoint into the variables; returns the epoch it was taken after (0: none)."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return 0
    with np.load(path) as stored:
        if sum(k.startswith("w") for k in stored) != len(variables) or sum(k.startswith("o") for k in stored) != len(
            optimizer_variables
        ):
            raise PatchworkError(f"{path}: does not fit this model; start afresh with --no-resume")
        for i, v in enumerate(variables):
            v.assign(stored[f"w{i}"])
        for i, v in enumerate(optimizer_variables):
            v.assign(stored[f"o{i}"])
        return int(stored["epoch"])


def read_losses(directory: Path) -> list[dict]:
    path = directory / LOSS_FILE
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_losses(directory: Path, rows: list[dict]) -> None:
    with atomic_write(directory / LOSS_FILE, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _plot(directory, rows)


def _plot(directory: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    trained = [r for r in rows if r["loss"] != ""]
    figure = Figure(figsize=(6, 3.5))
    axis = figure.add_subplot()
    axis.plot([int(r["epoch"]) for r in trained], [float(r["loss"]) for r in trained], "o-", label="NT-Xent loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    knn = [r for r in rows if r["knn_accuracy"] != ""]
    if knn:
        other = axis.twinx()
        other.plot([int(r["epoch"]) for r in knn], [float(r["knn_accuracy"]) for r in knn], "s--", color="C1")
        other.set_ylabel(f"validation {KNN_K}-NN accuracy", color="C1")
    axis.set_title("patchwork pretrain")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    with atomic_write(directory / PLOT_FILE, "wb", encoding=None) as handle:
        handle.write(buffer.getvalue())


def publish_extractor(directory: Path, backbone) -> Path:
    """Save the backbone as extractor.keras, atomically: a reader never sees half a model."""
    atomic_keras_save(backbone.save, directory / EXTRACTOR_FILE)
    return directory / EXTRACTOR_FILE


# --- the pretrain ---------------------------------------------------------------------------


def pretrain(
    project: Project,
    *,
    overrides: dict | None = None,
    resume: bool = True,
    progress: bool | None = None,
    seed: int = 0,
) -> PretrainReport:
    """Pretrain (or resume pretraining) the configured extractor on the project's images."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check(given)
    options = replace(project.config.pretrain, **given)
    settings = settings_of(project, options)
    directory = resumable_dir(project.directory, settings) if resume else None
    if directory is None:
        directory = runs.models_dir(project.directory) / f"{PREFIX}{runs.new_run_id()}"
        directory.mkdir(parents=True)
        atomic_write_text(directory / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    # one process per pretrain directory: a second one is refused rather than interleaved
    with sole_holder(directory / LOCK_FILE, f"{directory}: another pretrain is running in it"):
        return _run(project, directory, options, progress, seed)


def _check(overrides: dict) -> None:
    # the flags bypass patchwork.yaml's validation: the bounds PretrainConfig declares, named by flag
    for name, value in overrides.items():
        if out_of_bounds(PretrainConfig, name, value) is not None:
            flag = "--" + name.replace("_", "-")
            raise PatchworkError(f"{flag}: out of range, got {value!r} (see pretrain: in patchwork.yaml)")


def _run(project: Project, directory: Path, options: PretrainConfig, progress, seed) -> PretrainReport:
    """The pretrain in `directory`: from its checkpoint if it has one, an epoch at a time, each
    one's loss row and checkpoint written before the next; then the extractor."""
    from patchwork_cli.util.tensorflow_runtime import start_tensorflow

    tf = start_tensorflow()
    import keras

    backbone = starting_backbone(project)
    images = _training_images(project, options.image_size, int(backbone.input_shape[3]), progress)
    learner = _learner(tf, keras, backbone, options, images.grey)
    start_epoch = load_checkpoint(directory, learner.state, learner.optimizer_variables)
    losses = [r for r in read_losses(directory) if int(r["epoch"]) <= start_epoch]
    if start_epoch:
        log.info(f"resuming {directory.name} after epoch {start_epoch} of {options.epochs}")
    if not losses and images.scored.any():  # epoch 0: where it started
        losses.append({"epoch": 0, "loss": "", "seconds": "", "knn_accuracy": _knn_score(learner, images)})
        write_losses(directory, losses)
    started = time.perf_counter()
    for epoch in range(start_epoch + 1, options.epochs + 1):
        epoch_started = time.perf_counter()
        loss = _train_epoch(tf, learner, images.pixels, epoch, options, seed, progress)
        seconds = time.perf_counter() - epoch_started
        knn = _knn_score(learner, images)
        losses.append({"epoch": epoch, "loss": f"{loss:.5f}", "seconds": f"{seconds:.2f}", "knn_accuracy": knn})
        write_losses(directory, losses)  # before the checkpoint: a resume drops rows past the checkpoint
        save_checkpoint(directory, epoch, learner.state, learner.optimizer_variables)
        log.info(
            f"epoch {epoch}/{options.epochs}: loss {loss:.4f} in {seconds:.1f} s"
            + (f", validation {KNN_K}-NN accuracy {knn}" if knn else "")
        )
    last = losses[-1]
    return PretrainReport(
        directory,
        publish_extractor(directory, backbone),
        options.epochs,
        start_epoch,
        len(images.pixels),
        round(time.perf_counter() - started, 3),
        images.grey,
        float(last["loss"]) if last["loss"] != "" else float("nan"),
        float(last["knn_accuracy"]) if last["knn_accuracy"] != "" else None,
    )


@dataclass
class _Images:
    """The images trained on, decoded, and for the kNN accuracy the validation class of each."""

    pixels: np.ndarray  # N x size x size x channels, uint8
    grey: bool
    classes: np.ndarray  # per image, its one validation class, else -1
    scored: np.ndarray  # the images the kNN accuracy is measured on (none when too few)


def _training_images(project: Project, size: int, channels: int, progress: bool | None) -> _Images:
    pixels, rows = load_images(project, size, channels, progress)
    grey = is_grey(pixels)
    if grey and channels == 3:
        log.info("grey images: colour jitter is brightness and contrast only")
    classes = validation_classes(project, rows)
    scored = classes >= 0
    if scored.sum() <= KNN_K:
        scored[:] = False  # too few validation labels to score on
    return _Images(pixels, grey, classes, scored)


@dataclass
class _Learner:
    """What trains: the backbone with its projection head and optimizer, as compiled functions."""

    step: Callable  # (batch, seed) -> the NT-Xent loss of the batch's two views, after the update
    embed: Callable  # batch -> the backbone's pooled features
    state: list  # every weight of backbone and head, non-trainable too: what a checkpoint holds
    optimizer_variables: list


def _learner(tf, keras, backbone, options: PretrainConfig, grey: bool) -> _Learner:
    head = projection_head(keras, int(backbone.output_shape[-1]))
    optimizer = keras.optimizers.Adam(options.learning_rate)
    trainable = backbone.trainable_variables + head.trainable_variables
    optimizer.build(trainable)

    @tf.function(reduce_retracing=True)
    def step(batch, step_seed):
        views = tf.cast(batch, tf.float32)
        seeds = tf.random.experimental.stateless_split(step_seed, 2)
        first = augment(tf, views, options.image_size, grey, seeds[0])
        second = augment(tf, views, options.image_size, grey, seeds[1])
        with tf.GradientTape() as tape:
            features = pooled_features(keras, backbone(tf.concat([first, second], axis=0), training=True))
            projected = head(features, training=True)
            n = tf.shape(batch)[0]
            loss = nt_xent(tf, projected[:n], projected[n:], options.temperature)
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable, strict=True))
        return loss

    @tf.function(reduce_retracing=True)
    def embed(batch):
        return pooled_features(keras, backbone(tf.cast(batch, tf.float32), training=False))

    # batch-norm statistics move with training, so the checkpoint holds the non-trainable weights too
    return _Learner(step, embed, backbone.weights + head.weights, optimizer.variables)


def _train_epoch(
    tf, learner: _Learner, pixels: np.ndarray, epoch: int, options: PretrainConfig, seed, progress
) -> float:
    """One pass over the images in an order of its own (seeded by `seed` and the epoch, as every
    step's augmentation is); returns the mean loss of its steps."""
    from tqdm import tqdm

    batch_size = min(options.batch_size, len(pixels))
    steps = len(pixels) // batch_size
    order = np.random.default_rng([seed, epoch]).permutation(len(pixels))
    total = 0.0
    with tqdm(
        total=steps,
        desc=f"pretrain {epoch}/{options.epochs}",
        unit="step",
        disable=None if progress is None else not progress,
    ) as bar:
        for s in range(steps):
            batch = pixels[order[s * batch_size : (s + 1) * batch_size]]
            loss = float(learner.step(tf.constant(batch), tf.constant([seed, epoch * 100_003 + s], tf.int64)))
            total += loss
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    return total / steps


def _knn_score(learner: _Learner, images: _Images) -> str:
    """The validation kNN accuracy of the backbone's features as loss.csv holds it ("" if unscored)."""
    if not images.scored.any():
        return ""
    chosen = images.pixels[images.scored]
    features = np.concatenate([learner.embed(chosen[i : i + 64]).numpy() for i in range(0, len(chosen), 64)])
    return f"{knn_accuracy(features, images.classes[images.scored]):.4f}"
