"""Fitting a Keras head on the labelled rows' features.

Only labelled rows' features are loaded. Batches are drawn stratified over (class, value)
buckets, all epochs' indices at once with numpy, and gathered inside a tf.data pipeline, so
fitting runs at the speed of plain `model.fit` on arrays.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from patchwork_cli.store import runs
from patchwork_cli.store.config import Config
from patchwork_cli.store.features import FeatureStore
from patchwork_cli.training.inputs import TrainingInputs
from patchwork_cli.training.prediction import PREDICT_BATCH, Fitted, predict_all, predict_all_on_cluster
from patchwork_cli.util.tensorflow_runtime import start_tensorflow


def fit_keras_head(inputs: TrainingInputs, *, features_location: str, client) -> Fitted:
    """Fit the Keras head on the training rows (validation rows for early stopping)."""
    tf = start_tensorflow()  # only now that the inputs are known to be good
    import keras

    from patchwork_cli.modeling.heads import averages_first, build_model, embedding_model
    from patchwork_cli.modeling.losses import UNLABELLED, masked_loss

    store, config, seed, labels = inputs.store, inputs.config, inputs.seed, inputs.labels
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
    x_train, train_labels = _examples(store, inputs.train_store_rows, labels[inputs.train_rows])
    y_train = np.nan_to_num(train_labels, nan=UNLABELLED).astype(np.float32)
    dataset = _training_dataset(x_train, y_train, train_labels, config, seed)
    fit_options = {}
    if len(inputs.val_rows):
        x_val, val_labels = _examples(store, inputs.feature_rows[inputs.val_rows], labels[inputs.val_rows])
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
        predicted = inputs.predicted
        if client is None:
            return predict_all(head, store, len(predicted), predicted, staging, from_average)
        return predict_all_on_cluster(
            client, features_location, head, store, len(predicted), predicted, staging, from_average
        )

    return Fitted(history.history, write)


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


def epoch_timer():
    """A Keras callback adding each epoch's wall time to the history as `seconds`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["seconds"] = time.perf_counter() - self.started

    return EpochTimer()


def _examples(store: FeatureStore, rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features of store `rows` and their `labels`, in an order set by their content alone
    (a digest of each example's features and labels): what a run learns then depends neither on
    the order of labels.csv's lines nor on the images' names, so a table sorted or renamed by
    hand trains the same model with the same seed."""
    x = _load_rows(store, rows)
    keys = [hashlib.blake2b(x[i].tobytes() + labels[i].tobytes(), digest_size=16).digest() for i in range(len(x))]
    order = np.argsort(np.array(keys, dtype=object), kind="stable")
    return x[order], labels[order]


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
