"""patchwork train: fit the head on the labelled rows' features; predict every row; write a run.

Only labelled rows' features are loaded for training. Batches are drawn stratified over
(class, value) buckets, all epochs' indices at once with numpy, and gathered inside a
tf.data pipeline, so fitting runs at the speed of plain `model.fit` on arrays.
Predictions and embeddings for all rows then stream chunk by chunk from the feature
store into the run's zarr arrays, so memory stays flat as the project grows; with a Dask
cluster the chunks are tasks on its workers (see distributed.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
import zarr

from patchwork_cli.errors import PatchworkError
from patchwork_cli.evaluation.status import label_summary
from patchwork_cli.store import runs
from patchwork_cli.store.config import Config
from patchwork_cli.store.features import DONE, FeatureStore
from patchwork_cli.store.project import Project
from patchwork_cli.store.rowindex import rows_digest
from patchwork_cli.util.tensorflow_runtime import start_tensorflow

log = logging.getLogger("patchwork")
UNLABELLED = -1.0  # how an unlabelled cell reaches the masked loss
PREDICT_BATCH = 256
PREDICT_BLOCK_BYTES = 32 * 2**20  # float32 features read and predicted at once in train's prediction pass


@dataclass
class TrainReport:
    run_id: str
    epochs: int
    seconds: float
    train_rows: int
    validation_rows: int
    metrics: dict
    head: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- stratified sampling (numpy only) -----------------------------------------------


def stratified_indices(labels: np.ndarray, mode: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` row indices into `labels` (n, C; NaN = unlabelled), drawn with replacement.

    `instance`: every labelled row equally likely. `class`: first a (class, value) bucket
    uniformly, then a row within it, so rare labels are seen as often as common ones.
    `squareroot`: buckets weighted by the square root of their size, in between.
    """
    if mode == "instance":
        return rng.integers(0, len(labels), count)
    members, sizes = _buckets(labels)
    weights = np.sqrt(sizes) if mode == "squareroot" else np.ones(len(sizes))
    bucket = rng.choice(len(sizes), size=count, p=weights / weights.sum())
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = (rng.random(count) * sizes[bucket]).astype(np.int64)
    return members[offsets[bucket] + position]


def _buckets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of each non-empty (class, value) bucket, concatenated, and the bucket sizes."""
    groups = [np.flatnonzero(labels[:, c] == value) for c in range(labels.shape[1]) for value in (0, 1)]
    groups = [g for g in groups if len(g)]
    return np.concatenate(groups), np.array([len(g) for g in groups])


# --- fingerprint for --if-changed ------------------------------------------------------


def fingerprint(table: pd.DataFrame, config: Config, store: FeatureStore | None) -> str:
    """What a run depends on: the images and their labels, the config, and which features exist.
    Order counts: a labels.csv sorted by hand makes a new run (which predicts what the old one did)."""
    digest = hashlib.sha256()
    filepaths = table["filepath"].tolist()
    digest.update(rows_digest(filepaths).encode())
    digest.update(table[config.classes].to_numpy(np.float64).tobytes())
    digest.update(table["exclude"].to_numpy(bool).tobytes() + table["validation"].to_numpy(bool).tobytes())
    # where the features are stored and how to reach the cluster are not what a run depends on:
    # the features' identity and status are
    # (nor pretrain's settings: a pretrained extractor reaches a run through the features' identity)
    settings = {
        key: value for key, value in dataclasses.asdict(config).items() if key not in ("storage", "dask", "pretrain")
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    if store is not None:
        digest.update(json.dumps(store.identity, sort_keys=True).encode())
        digest.update(store.table_status(store.match(filepaths)).tobytes())
    return digest.hexdigest()


def is_unchanged(project: Project, head: str | None = None, seed: int | None = None) -> bool:
    """True when LATEST was trained on exactly the current labels, config and features."""
    latest = runs.latest_run(project.directory)
    if latest is None:
        return False
    recorded = runs.read_json(runs.models_dir(project.directory) / latest / runs.RUN_FILE).get("fingerprint")
    config = _with_options(project.config, head, seed)
    return recorded == fingerprint(project.labels(), config, FeatureStore.open(project.features_location))


# --- the run ---------------------------------------------------------------------------


def train(
    project: Project, head: str | None = None, progress: bool | None = None, client=None, seed: int | None = None
) -> TrainReport:
    """Train a head on the current labels and publish it as a new run (LATEST).

    `head` and `seed` override model.head and training.seed. With `client` (a
    dask.distributed.Client) the prediction over all rows runs on its cluster.
    Two ways to fit, one way to write and publish the run: a Keras head (`_fit_head`), or
    label propagation over the features' nearest-neighbour graph (`_propagate`, no TensorFlow).
    """
    from patchwork_cli.modeling.spec import LABELPROP, parse_head_spec

    config = _with_options(project.config, head, seed)
    table = project.labels()
    store = FeatureStore.open(project.features_location)
    if store is None:
        raise PatchworkError("features not extracted yet: run 'patchwork extract' first")
    match = store.match(table["filepath"].tolist(), project.directory)
    labels = table[config.classes].to_numpy(np.float64)
    has_features = store.table_status(match) == DONE
    usable = ~table["exclude"].to_numpy(bool) & has_features & ~np.isnan(labels).all(axis=1)
    validation = table["validation"].to_numpy(bool)
    train_rows, val_rows = np.flatnonzero(usable & ~validation), np.flatnonzero(usable & validation)
    _check_labels(table, labels, has_features, train_rows, config.classes)
    feature_rows = match.store_rows_of_table()
    seed = config.training.seed if config.training.seed is not None else int(np.random.default_rng().integers(2**31))
    # The run's rows are the feature store's (predictions are written chunk for chunk beside
    # the features), and its filepaths are recorded; readers match them to labels.csv. While
    # the store follows labels.csv, so does the run, all its rows (images without features: NaN).
    # Every row with features is predicted, the rows no labels.csv row takes too: a chunk's
    # batch is then the same whatever was deleted from labels.csv, and so are its predictions.
    run_filepaths = table["filepath"].tolist() if match.in_order else store.filepaths()
    predicted = np.zeros(len(run_filepaths), bool)
    predicted[: match.store_rows] = store.status()[: match.store_rows] == DONE

    started = time.perf_counter()
    if parse_head_spec(config.model.head).kind == LABELPROP:
        if client is not None:
            log.warning("label propagation runs in this process: the Dask cluster is not used for it")
        fitted = _propagate(store, config, feature_rows[train_rows], labels[train_rows], predicted)
    else:
        fitted = _fit_head(project, store, config, feature_rows, labels, train_rows, val_rows, seed, client, predicted)

    run_id = runs.new_run_id()
    staging = runs.staging_dir(project.directory, run_id)
    try:
        probabilities = fitted.write(staging)
        runs.record_run_rows(staging, run_filepaths)
        probabilities = match.gather(probabilities)
        from patchwork_cli.evaluation.metrics import compute_metrics
        from patchwork_cli.evaluation.report import agreement_with

        exclude = table["exclude"].to_numpy(bool)
        metrics = compute_metrics(probabilities, labels, validation, exclude, config.classes, task=config.task)
        previous = runs.latest_run(project.directory)
        metrics["agreement"] = agreement_with(project, previous, config.classes, probabilities, table, config.task)
        seconds = time.perf_counter() - started
        _write_run_files(
            staging,
            fitted.history,
            metrics,
            table,
            config,
            store,
            seed,
            run_id,
            len(train_rows),
            len(val_rows),
            seconds,
        )
        runs.publish(project.directory, staging, run_id)
    except BaseException:
        runs.discard(staging)
        raise
    return TrainReport(
        run_id,
        len(fitted.history["loss"]),
        round(seconds, 3),
        len(train_rows),
        len(val_rows),
        metrics,
        config.model.head,
    )


@dataclass
class _Fitted:
    """What a fit hands to the run: its history (a `loss` per epoch, and any other columns), and
    `write(staging)`, which writes its model (if any), predictions and embeddings into the run's
    staging directory and returns the probabilities of the run's rows (in the store's order)."""

    history: dict
    write: Callable[[Path], np.ndarray]


def _fit_head(project, store, config, feature_rows, labels, train_rows, val_rows, seed, client, predicted) -> _Fitted:
    """Fit the Keras head on the training rows (validation rows for early stopping)."""
    tf = start_tensorflow()  # only now that the inputs are known to be good
    import keras

    from patchwork_cli.modeling.heads import averages_first, build_model, embedding_model
    from patchwork_cli.modeling.losses import masked_loss

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    model = build_model(store.row_shape, len(config.classes), config.model, config.task)
    # One tf.function call per epoch, not per batch: the heads are so small that Python's per-step
    # overhead was four fifths of fitting them (the same batches in the same order, the same weights).
    model.compile(
        optimizer=_optimizer(config),
        loss=masked_loss(config.model, config.task),
        steps_per_execution=config.training.batches_per_epoch,
    )
    x_train, train_labels = _examples(store, feature_rows[train_rows], labels[train_rows])
    y_train = np.nan_to_num(train_labels, nan=UNLABELLED).astype(np.float32)
    dataset = _training_dataset(x_train, y_train, train_labels, config, seed)
    fit_options = {}
    if len(val_rows):
        x_val, val_labels = _examples(store, feature_rows[val_rows], labels[val_rows])
        y_val = np.nan_to_num(val_labels, nan=UNLABELLED).astype(np.float32)
        fit_options["validation_data"] = _quiet_dataset(
            tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(PREDICT_BATCH)
        )
        if config.training.patience is not None:
            fit_options["callbacks"] = [
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=config.training.patience, restore_best_weights=True
                )
            ]
    fit_options["callbacks"] = [*fit_options.get("callbacks", []), epoch_timer()]
    history = model.fit(
        dataset,
        epochs=config.training.epochs,
        steps_per_epoch=config.training.batches_per_epoch,
        shuffle=False,  # the stratified draw is already random
        verbose=0,
        **fit_options,
    )
    del x_train

    def write(staging: Path) -> np.ndarray:
        model.save(staging / runs.MODEL_FILE)  # before predicting: Dask workers load it from here
        # A head that averages the maps first predicts from the store's pooled copy: a twenty-
        # fifth of the bytes to read for 7x7 maps, the same predictions (to float rounding).
        from_average = store.has_maps and averages_first(model)
        head = embedding_model(model, from_average)
        if client is None:
            return _predict_all(head, store, len(predicted), predicted, staging, from_average)
        return _predict_all_on_cluster(
            client, project.features_location, head, store, len(predicted), predicted, staging, from_average
        )

    return _Fitted(history.history, write)


def _propagate(
    store: FeatureStore, config: Config, seed_rows: np.ndarray, seed_labels: np.ndarray, predicted
) -> _Fitted:
    """Label propagation (labelprop.py) over the store's pooled features of every row that has
    them: the training rows are the seeds, the validation rows are only scored. No model, no
    TensorFlow; the run's embeddings are the unit-normalised pooled features its graph joined."""
    from patchwork_cli.modeling.labelprop import normalise_rows, propagate

    if store.needs_pooled():
        raise PatchworkError("the feature store has no pooled copy yet: run 'patchwork extract' once to build it")
    nodes = np.flatnonzero(predicted[: store.rows])  # store rows with features
    position = np.full(store.rows, -1, np.int64)
    position[nodes] = np.arange(len(nodes))
    features = np.asarray(store.pooled.get_orthogonal_selection((nodes,)), dtype=np.float32)
    settings = config.model
    started = time.perf_counter()
    result = propagate(
        features,
        position[seed_rows],
        seed_labels,
        config.task,
        k=settings.labelprop_k,
        iterations=settings.labelprop_iterations,
        alpha=settings.labelprop_alpha,
    )
    seconds = time.perf_counter() - started
    log.info(
        "label propagation over %d rows, k=%d: %d iterations in %.1f s",
        len(nodes),
        result.neighbours,
        len(result.residuals),
        seconds,
    )
    # one history row per conjugate gradient iteration: its largest relative residual as the `loss`
    steps = max(1, len(result.residuals))
    history = {
        "loss": result.residuals or [0.0],
        "seconds": [seconds / steps] * steps,
    }

    def write(staging: Path) -> np.ndarray:
        probabilities, embeddings = _run_arrays(
            staging, len(predicted), store.chunk_rows, features.shape[1], len(config.classes)
        )
        full = np.full((len(predicted), len(config.classes)), np.nan, np.float32)
        full[nodes] = result.probabilities
        probabilities[:] = full
        for start in range(0, len(predicted), store.chunk_rows):  # chunk by chunk: one (N, d) copy at most
            stop = min(start + store.chunk_rows, len(predicted))
            block = np.full((stop - start, features.shape[1]), np.nan, np.float32)
            inside = (nodes >= start) & (nodes < stop)
            block[nodes[inside] - start] = normalise_rows(features[inside])
            embeddings[start:stop] = block
        return full

    return _Fitted(history, write)


def epoch_timer():
    """A Keras callback adding each epoch's wall time to the history as `seconds`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["seconds"] = time.perf_counter() - self.started

    return EpochTimer()


def _with_options(config: Config, head: str | None, seed: int | None) -> Config:
    """The config with the command line's --head and --seed in place of model.head and training.seed
    (so that the run's config.yaml and fingerprint say what it was trained with)."""
    if head is not None:
        from patchwork_cli.modeling.spec import parse_head_spec

        parse_head_spec(head)  # a bad --head is an error before anything else happens
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, head=head))
    if seed is not None:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=seed))
    return config


def _examples(store: FeatureStore, rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features of store `rows` and their `labels`, in an order set by their content alone
    (a digest of each example's features and labels): what a run learns then depends neither on
    the order of labels.csv's lines nor on the images' names, so a table sorted or renamed by
    hand trains the same model with the same seed."""
    x = _load_rows(store, rows)
    keys = [hashlib.blake2b(x[i].tobytes() + labels[i].tobytes(), digest_size=16).digest() for i in range(len(x))]
    order = np.argsort(np.array(keys, dtype=object), kind="stable")
    return x[order], labels[order]


def _check_labels(table, labels, has_features, train_rows, classes) -> None:
    excluded = table["exclude"].to_numpy(bool)
    labelled = ~np.isnan(labels).all(axis=1) & ~excluded
    without = int((labelled & ~has_features).sum())
    if without:
        log.warning("%d labelled image(s) have no features (not extracted or failed) and are left out", without)
    if not len(train_rows):
        raise PatchworkError(
            "no training labels: label some images that are not validation or excluded (patchwork label)"
        )
    train_labels = labels[train_rows]
    for k, name in enumerate(classes):
        for value, word in ((1, "positive"), (0, "negative")):
            if not (train_labels[:, k] == value).any():
                log.warning("class %r has no %s training labels; its output cannot learn it", name, word)


def _load_rows(store: FeatureStore, rows: np.ndarray) -> np.ndarray:
    """The features of `rows` only (zarr reads just the chunks that hold them)."""
    return np.asarray(store.features.get_orthogonal_selection((rows,)), dtype=np.float32)


def _training_dataset(x, y, labels, config: Config, seed: int):
    """Every epoch's stratified batches, drawn up front, gathered in the tf.data graph."""
    import tensorflow as tf

    settings = config.training
    total = settings.epochs * settings.batches_per_epoch * settings.batch_size
    indices = stratified_indices(labels, settings.stratify, total, np.random.default_rng(seed))
    x, y = tf.constant(x), tf.constant(y)
    batches = tf.data.Dataset.from_tensor_slices(indices.reshape(-1, settings.batch_size))
    return _quiet_dataset(batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i))).prefetch(2))


def _quiet_dataset(dataset):
    """tf.data's graph rewrites and autotuning buy nothing for these small pipelines, and in
    TensorFlow 2.21 they log errors from C++ into the user's terminal: switch them off."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return dataset.with_options(options)


def _optimizer(config: Config):
    import keras

    settings = config.training
    rate = settings.learning_rate
    if settings.cosine_decay_steps is not None:
        # a fixed period: restart every cosine_decay_steps at the full rate
        rate = keras.optimizers.schedules.CosineDecayRestarts(rate, settings.cosine_decay_steps, t_mul=1.0, m_mul=1.0)
    decay = settings.weight_decay or None
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=settings.momentum, weight_decay=decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)


def _predict_all(
    model, store: FeatureStore, rows: int, has_features: np.ndarray, directory: Path, from_average: bool
) -> np.ndarray:
    """Probabilities (rows, C) and embeddings for the store's first `rows` rows, a few whole
    feature chunks at a time, into the run's zarr arrays; NaN where `has_features` is False.
    `from_average`: the model takes the store's pooled copy. Returns the probabilities."""
    probabilities, embeddings = _run_arrays(directory, rows, store.chunk_rows, *_output_widths(model))
    source = store.pooled if from_average else store.features
    row_bytes = int(np.prod(source.shape[1:])) * 4
    per_block = store.chunk_rows * max(1, PREDICT_BLOCK_BYTES // (row_bytes * store.chunk_rows))
    end = min(rows, store.rows)
    for start in range(0, end, per_block):
        stop = min(start + per_block, end)
        predict_chunk(model, store, start, stop, has_features[start:stop], probabilities, embeddings, from_average)
    return probabilities[:]


def _predict_all_on_cluster(
    client, location: str, model, store, rows: int, has_features, directory: Path, from_average: bool
):
    """_predict_all with each chunk a Dask task; the workers load the head from the run's model.keras."""
    from patchwork_cli.distributed.cluster import predict_on_cluster

    probabilities, _ = _run_arrays(directory, rows, store.chunk_rows, *_output_widths(model))
    chunks = _prediction_chunks(store, rows)
    predict_on_cluster(client, location, directory / runs.MODEL_FILE, chunks, has_features, directory, from_average)
    return probabilities[:]


def _output_widths(model) -> tuple[int, int]:
    """The widths of an embedding model's two outputs: its embedding, and the classes."""
    embedding_width, classes = (int(o.shape[-1]) for o in model.outputs)
    return embedding_width, classes


def _run_arrays(
    directory: Path, rows: int, chunk: int, embedding_width: int, classes: int
) -> tuple[zarr.Array, zarr.Array]:
    """The run's predictions (rows, C) and embeddings (rows, width) arrays, all NaN, chunked like
    the feature store, so that each chunk of rows is one file of each: tasks never share one."""

    def nan_array(name: str, width: int) -> zarr.Array:
        return zarr.create_array(
            str(directory / name), shape=(rows, width), chunks=(chunk, width), dtype="float32", fill_value=np.nan
        )

    return nan_array(runs.PREDICTIONS_NAME, classes), nan_array(runs.EMBEDDINGS_NAME, embedding_width)


def _prediction_chunks(store: FeatureStore, rows: int) -> list[tuple[int, int]]:
    """(start, stop) of each feature-store chunk among the run's `rows`."""
    end = min(rows, store.rows)
    return [(start, min(start + store.chunk_rows, end)) for start in range(0, end, store.chunk_rows)]


def predict_chunk(
    model, store: FeatureStore, start: int, stop: int, has_features, probabilities, embeddings, from_average: bool
) -> None:
    """Embeddings and probabilities of rows start..stop (whole feature chunks) that have features,
    written over those rows of the run's arrays: one Dask task is one chunk. `from_average`: the
    model reads the store's pooled copy, not the maps."""
    present = np.flatnonzero(has_features)
    if not len(present):
        return
    source = store.pooled if from_average else store.features
    features = np.asarray(source[start:stop], dtype=np.float32)[present]
    embedded, predicted = model.predict_on_batch(features)  # a block is a few tens of MiB: one batch
    block_p = np.full((stop - start, probabilities.shape[1]), np.nan, np.float32)
    block_e = np.full((stop - start, embeddings.shape[1]), np.nan, np.float32)
    block_p[present], block_e[present] = predicted, embedded
    probabilities[start:stop], embeddings[start:stop] = block_p, block_e


def _write_run_files(
    directory, history, metrics, table, config, store, seed, run_id, train_rows, val_rows, seconds
) -> None:
    pd.DataFrame(history).rename_axis("epoch").to_csv(directory / runs.HISTORY_FILE)
    runs.write_json(directory / runs.METRICS_FILE, metrics)
    (directory / runs.CONFIG_FILE).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    counts = label_summary(table, config.classes)
    runs.write_json(directory / runs.LABEL_COUNTS_FILE, counts)
    runs.write_json(
        directory / runs.RUN_FILE,
        {
            "run_id": run_id,
            "classes": config.classes,
            "task": config.task,
            "head": config.model.head,
            "output": config.model.output,
            "seed": seed,
            "epochs": len(history["loss"]),
            "seconds": round(seconds, 3),
            "rows": len(table),
            "train_rows": train_rows,
            "validation_rows": val_rows,
            "labelled_images": counts["labelled"]["full"] + counts["labelled"]["partial"],
            "features": store.identity,
            "fingerprint": fingerprint(table, config, store),
        },
    )
