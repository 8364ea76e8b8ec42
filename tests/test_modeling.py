"""The trainable head: the head grammar, the Keras models it builds, and the masked loss."""

from __future__ import annotations

import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from patchwork_cli.errors import PatchworkError
from patchwork_cli.modeling.heads import build_model, embedding_model
from patchwork_cli.modeling.losses import UNLABELLED, masked_loss
from patchwork_cli.modeling.spec import HeadSpec, parse_head_spec
from patchwork_cli.store.config import ModelConfig

pytestmark = pytest.mark.tensorflow

MAP_SHAPE, VECTOR_SHAPE = (7, 7, 32), (64,)
CLASSES = 3


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


# --- the grammar ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool:avg", HeadSpec("pool:avg", "pool", pooling="avg")),
        ("pool:max", HeadSpec("pool:max", "pool", pooling="max")),
        ("flatten", HeadSpec("flatten", "flatten")),
        ("mlp:256,128", HeadSpec("mlp:256,128", "mlp", widths=(256, 128))),
        (" conv:128, p,d,r,64 ", HeadSpec("conv:128, p,d,r,64", "conv", steps=(128, "p", "d", "r", 64))),
    ],
)
def test_parse_head_spec(text, expected):
    assert parse_head_spec(text) == expected


def test_the_grammar_does_not_import_tensorflow():
    # so that a bad --head is reported without TensorFlow's seconds of start-up
    code = "import sys, patchwork_cli.modeling.spec; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conv:128,q,64", "head 'conv:128,q,64': token 2 'q' is not a filter count, p, d or r"),
        ("conv:0", "head 'conv:0': token 1 '0' is not a filter count, p, d or r"),
        ("conv:", "head 'conv:': token 1 '' is not a filter count, p, d or r"),
        ("mlp:256,x", "head 'mlp:256,x': token 2 'x' is not a layer width"),
        ("mlp:256,,8", "head 'mlp:256,,8': token 2 '' is not a layer width"),
        ("mlp:-4", "head 'mlp:-4': token 1 '-4' is not a layer width"),
        ("mlp", "head 'mlp': token 1 '' is not a layer width"),
        ("pool:mean", "head 'pool:mean': expected pool:avg or pool:max"),
        ("pool", "head 'pool': expected pool:avg or pool:max"),
        ("flatten:2", "head 'flatten:2': flatten takes no arguments"),
        ("auto:avg", "head 'auto:avg': auto takes no arguments"),
        ("foo:1", "unknown head 'foo:1' (expected auto, pool:avg, pool:max, flatten, mlp:W,..., conv:..., labelprop)"),
        ("", "unknown head '' (expected auto, pool:avg, pool:max, flatten, mlp:W,..., conv:..., labelprop)"),
    ],
)
def test_bad_head_spec_names_the_bad_token(text, message):
    with pytest.raises(PatchworkError) as error:
        parse_head_spec(text)
    assert str(error.value) == message


# --- building -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "input_shape", "embedding_width"),
    [
        ("pool:avg", MAP_SHAPE, 32),
        ("pool:max", MAP_SHAPE, 32),
        ("flatten", MAP_SHAPE, 7 * 7 * 32),
        ("flatten", VECTOR_SHAPE, 64),  # vectors are used as they are: a linear head
        ("mlp:16,8", VECTOR_SHAPE, 8),
        ("mlp:16,8", MAP_SHAPE, 8),  # average-pooled first
        ("conv:16,p,d,r,8", MAP_SHAPE, 8),
        ("conv:r", MAP_SHAPE, 32),  # a residual block keeps the input's channels
    ],
)
@pytest.mark.parametrize("batch_norm", [False, True])
def test_every_head_builds_with_named_layers(head, input_shape, embedding_width, batch_norm):
    model = build_model(input_shape, CLASSES, ModelConfig(head=head, batch_norm=batch_norm))
    features = np.random.default_rng(0).normal(size=(5, *input_shape)).astype(np.float16)

    embedded, probabilities = embedding_model(model).predict(features, verbose=0)

    assert model.output_shape == (None, CLASSES)
    assert embedded.shape == (5, embedding_width)
    assert probabilities.shape == (5, CLASSES) and probabilities.dtype == np.float32
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert model.get_layer("logits").kernel.shape == (embedding_width, CLASSES)
    np.testing.assert_allclose(probabilities, model.predict(features, verbose=0), rtol=1e-6)


def test_batch_norm_follows_each_convolution_and_dense_layer():
    def count_batch_norms(head):
        model = build_model(MAP_SHAPE, CLASSES, ModelConfig(head=head, batch_norm=True))
        return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)

    assert count_batch_norms("mlp:16,8") == 2
    assert count_batch_norms("conv:16,p,d,r,8") == 4  # two convolutions + two in the residual block
    assert count_batch_norms("pool:avg") == 0


@pytest.mark.parametrize("head", ["pool:avg", "pool:max", "conv:8", "conv:p"])
def test_heads_needing_feature_maps_refuse_vectors(head):
    with pytest.raises(PatchworkError) as error:
        build_model(VECTOR_SHAPE, CLASSES, ModelConfig(head=head))
    assert str(error.value) == (
        f"head '{head}' needs feature maps (height, width, channels) but the features are vectors of length 64; "
        "use flatten or mlp:W,... (or extract again with extractor.pooling: null)"
    )


def test_features_that_are_neither_maps_nor_vectors_are_refused():
    with pytest.raises(PatchworkError, match=r"features of shape \(7, 7\) are neither a feature map"):
        build_model((7, 7), CLASSES, ModelConfig(head="flatten"))


def test_spatial_dropout_needs_a_rate_below_one():
    with pytest.raises(PatchworkError, match="model.dropout must be below 1 for 'd', got 1.0"):
        build_model(MAP_SHAPE, CLASSES, ModelConfig(head="conv:8,d", dropout=1.0))


# --- training -----------------------------------------------------------------------------


def toy_problem(input_shape, rows=256):
    """Features with class k = (mean of channel k > 0), for a vector just feature k > 0;
    a third of the cells unlabelled."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, *input_shape)).astype(np.float32)
    channel_means = x.reshape(rows, -1, input_shape[-1]).mean(axis=1)[:, :CLASSES]
    y = (channel_means > 0).astype(np.float32)
    y[rng.random(y.shape) < 1 / 3] = UNLABELLED
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("output", ["sigmoid", "focal"])
@pytest.mark.parametrize(("head", "input_shape"), [("mlp:16", VECTOR_SHAPE), ("conv:8,p,d,r", MAP_SHAPE)])
def test_training_reduces_the_loss(output, head, input_shape):
    # No batch norm: its inference-time statistics need far more steps than a fast test takes.
    config = ModelConfig(head=head, output=output, dropout=0.1, label_smoothing=0.1)
    model = build_model(input_shape, CLASSES, config)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=masked_loss(config))
    x, y = toy_problem(input_shape)

    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    after = model.evaluate(x, y, verbose=0)

    assert np.isfinite(after) and after < 0.7 * before


# Keras' own variable saving trips a NumPy 2 deprecation; nothing of ours.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_save_and_load_reproduce_predictions(tmp_path):
    config = ModelConfig(head="conv:8,p,d,r", batch_norm=True)
    model = build_model(MAP_SHAPE, CLASSES, config)
    model.compile(optimizer="adam", loss=masked_loss(config))
    x, y = toy_problem(MAP_SHAPE, rows=32)
    model.fit(x, y, epochs=1, verbose=0)  # moves the batch-norm statistics away from their defaults
    path = tmp_path / "model.keras"

    model.save(path)
    loaded = keras.models.load_model(path, compile=False)

    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        embedding_model(loaded).predict(x, verbose=0)[0], embedding_model(model).predict(x, verbose=0)[0], rtol=1e-5
    )
    np.testing.assert_array_equal(loaded.get_layer("logits").kernel.numpy(), model.get_layer("logits").kernel.numpy())


# --- the masked loss ----------------------------------------------------------------------

Y_TRUE = np.array([[1, 0, UNLABELLED], [UNLABELLED, 1, 0]], np.float32)
# Unlabelled cells hold 0.0 and 1.0, where an unmasked cross-entropy would be infinite.
Y_PRED = np.array([[0.8, 0.3, 0.0], [1.0, 0.6, 0.2]], np.float32)
LABELLED = Y_TRUE >= 0


def loss_and_gradient(config, y_true=Y_TRUE, y_pred=Y_PRED, task="multilabel"):
    y_pred = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = masked_loss(config, task)(tf.constant(y_true), y_pred)
    return float(loss), tape.gradient(loss, y_pred).numpy()


@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig(label_smoothing=0.2), ModelConfig(output="focal", focal_gamma=2.0)],
)
def test_unlabelled_cells_have_exactly_zero_gradient(config):
    loss, gradient = loss_and_gradient(config)

    assert np.isfinite(loss) and np.isfinite(gradient).all()
    assert (gradient[~LABELLED] == 0.0).all()
    assert (gradient[LABELLED] != 0.0).all()


def test_binary_cross_entropy_on_labelled_cells_only():
    loss, _ = loss_and_gradient(ModelConfig(output="sigmoid"))

    # labelled cells: (y=1, p=0.8), (y=0, p=0.3), (y=1, p=0.6), (y=0, p=0.2)
    expected = -(math.log(0.8) + math.log(0.7) + math.log(0.6) + math.log(0.8)) / 4
    assert loss == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_moves_targets_towards_one_half():
    loss, _ = loss_and_gradient(ModelConfig(output="sigmoid", label_smoothing=0.2))

    # targets become 1 -> 0.9 and 0 -> 0.1
    def bce(target, p):
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    expected = (bce(0.9, 0.8) + bce(0.1, 0.3) + bce(0.9, 0.6) + bce(0.1, 0.2)) / 4
    assert loss == pytest.approx(expected, rel=1e-5)


def test_focal_loss_matches_the_formula():
    loss, _ = loss_and_gradient(ModelConfig(output="focal", focal_gamma=2.0))

    # -(1 - p)^2 log p for positives, -p^2 log(1 - p) for negatives
    expected = -(0.2**2 * math.log(0.8) + 0.3**2 * math.log(0.7) + 0.4**2 * math.log(0.6) + 0.2**2 * math.log(0.8)) / 4
    assert loss == pytest.approx(expected, rel=1e-5)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    focal, _ = loss_and_gradient(ModelConfig(output="focal", focal_gamma=0.0))
    cross_entropy, _ = loss_and_gradient(ModelConfig(output="sigmoid"))
    assert focal == pytest.approx(cross_entropy, rel=1e-6)


@pytest.mark.parametrize("output", ["sigmoid", "focal"])
def test_a_batch_without_labels_gives_zero_loss(output):
    y_true = np.full_like(Y_TRUE, UNLABELLED)

    loss, gradient = loss_and_gradient(ModelConfig(output=output), y_true=y_true)

    assert loss == 0.0
    assert (gradient == 0.0).all()


def test_confidently_wrong_labelled_cells_are_clipped_not_infinite():
    loss, gradient = loss_and_gradient(
        ModelConfig(), y_true=np.array([[1, 0]], np.float32), y_pred=np.array([[0.0, 1.0]], np.float32)
    )
    # about -log(1e-7) = 16.1 per cell (1 - 1e-7 rounds in float32, so not exactly)
    assert 15.5 < loss < 16.5
    assert np.isfinite(gradient).all()


# --- the multiclass (softmax) loss --------------------------------------------------------

# One row per case: a positive (dog), a positive with its other cells unlabelled (cat, as after
# `classes add`), "not cat, not bird" (negative-only), "not dog" alone, and an unlabelled row.
MC_TRUE = np.array(
    [
        [0, 1, 0],
        [1, UNLABELLED, UNLABELLED],
        [0, UNLABELLED, 0],
        [UNLABELLED, 0, UNLABELLED],
        [UNLABELLED, UNLABELLED, UNLABELLED],
    ],
    np.float32,
)
MC_PRED = np.array(
    [[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [0.9, 0.05, 0.05]], np.float32
)


def test_softmax_loss_by_hand_with_negative_only_rows():
    loss, gradient = loss_and_gradient(ModelConfig(), y_true=MC_TRUE, y_pred=MC_PRED, task="multiclass")

    # positives: -log p(true class); negative-only rows: -log(1 - sum of the classes labelled 0);
    # the unlabelled row counts for nothing, in the sum and in the number of rows
    expected = -(math.log(0.7) + math.log(0.5) + math.log(1 - (0.1 + 0.3)) + math.log(1 - 0.25)) / 4
    assert loss == pytest.approx(expected, rel=1e-5)
    assert (gradient[4] == 0).all()
    # a positive row pulls only on its class's probability; a negative-only row only on its 0s
    assert gradient[0].tolist() == pytest.approx([0, -1 / 0.7 / 4, 0], rel=1e-5)
    assert gradient[2].tolist() == pytest.approx([1 / 0.6 / 4, 0, 1 / 0.6 / 4], rel=1e-5)


def test_softmax_loss_with_focal_and_smoothing_follows_the_binary_formula():
    focal, _ = loss_and_gradient(ModelConfig(output="focal", focal_gamma=2.0), MC_TRUE[:1], MC_PRED[:1], "multiclass")
    assert focal == pytest.approx(-(0.3**2) * math.log(0.7), rel=1e-5)
    smoothed, _ = loss_and_gradient(ModelConfig(label_smoothing=0.2), MC_TRUE[2:3], MC_PRED[2:3], "multiclass")
    assert smoothed == pytest.approx(-(0.9 * math.log(0.6) + 0.1 * math.log(0.4)), rel=1e-5)


@pytest.mark.slow
def test_a_multiclass_model_outputs_softmax_and_learns():
    config = ModelConfig(head="mlp:16", dropout=0.1)
    model = build_model(VECTOR_SHAPE, CLASSES, config, task="multiclass")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=masked_loss(config, "multiclass"))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(256, *VECTOR_SHAPE)).astype(np.float32)
    y = np.eye(CLASSES, dtype=np.float32)[x[:, :CLASSES].argmax(axis=1)]
    y[::4] = np.where(y[::4] == 1, UNLABELLED, 0)  # a quarter of the rows say only what they are not

    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    probabilities = model.predict(x, verbose=0)

    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.evaluate(x, y, verbose=0) < 0.6 * before
    assert (probabilities.argmax(axis=1) == x[:, :CLASSES].argmax(axis=1)).mean() > 0.8
