"""The Keras model trained by patchwork: features -> head -> "embedding" -> "logits" -> "probabilities".

Sampling reads two layers by name, so every model has them whatever the head:
"embedding" (the vector fed into the last dense layer) and "logits" (that dense layer,
whose kernel gives BADGE gradient embeddings). Only standard Keras layers are used, so
``keras.models.load_model(path, compile=False)`` needs no custom objects.

The input is float32. Feature stores are float16 by default; Keras casts such arrays to
the input dtype on the way in, and training feeds float32 anyway.
"""

from __future__ import annotations

import keras

from patchwork_cli.errors import PatchworkError
from patchwork_cli.modeling.spec import (
    CONV,
    FLATTEN,
    MAX_POOL,
    MLP,
    POOL,
    RESIDUAL,
    SPATIAL_DROPOUT,
    HeadSpec,
    check_feature_shape,
    parse_head_spec,
)
from patchwork_cli.store.config import MULTICLASS, MULTILABEL, ModelConfig

EMBEDDING, LOGITS, PROBABILITIES = "embedding", "logits", "probabilities"


def build_model(
    input_shape: tuple[int, ...], num_classes: int, model_config: ModelConfig, task: str = MULTILABEL
) -> keras.Model:
    """An uncompiled model mapping features of `input_shape` to `num_classes` probabilities:
    one sigmoid each, or a softmax over them when `task` is multiclass."""
    spec = parse_head_spec(model_config.head)
    input_shape = tuple(int(size) for size in input_shape)
    check_feature_shape(spec, input_shape)
    _check_dropout(spec, model_config.dropout)
    features = keras.Input(shape=input_shape, dtype="float32", name="features")
    head = {POOL: _pool_head, FLATTEN: _flatten_head, MLP: _mlp_head, CONV: _conv_head}[spec.kind]
    embedding = keras.layers.Identity(name=EMBEDDING)(head(features, spec, model_config))
    logits = keras.layers.Dense(num_classes, name=LOGITS)(embedding)
    activation = "softmax" if task == MULTICLASS else "sigmoid"
    probabilities = keras.layers.Activation(activation, name=PROBABILITIES)(logits)
    return keras.Model(features, probabilities, name="patchwork_head")


def embedding_model(model: keras.Model, from_average: bool = False) -> keras.Model:
    """The same network, returning [embedding, probabilities] for each input row. With
    `from_average` (a head that averages its feature maps first: see averages_first), the
    network after that average, taking the (n, c) averages: the feature store's pooled copy."""
    if not from_average:
        return keras.Model(model.inputs, [model.get_layer(EMBEDDING).output, model.outputs[0]])
    average = model.layers[1]
    x = inputs = keras.Input(shape=(int(average.output.shape[-1]),), dtype="float32", name="averages")
    for layer in model.layers[2:]:  # pool and mlp heads are chains: each layer takes the one before
        x = layer(x)
        if layer.name == EMBEDDING:
            embedding = x
    return keras.Model(inputs, [embedding, x])


def averages_first(model: keras.Model) -> bool:
    """Whether the head's first step is the spatial average of feature maps (pool:avg, and mlp on maps)."""
    return isinstance(model.layers[1], keras.layers.GlobalAveragePooling2D)


# --- heads: each maps the features to the embedding vector --------------------------------


def _pool_head(features, spec: HeadSpec, config: ModelConfig):
    pooling = keras.layers.GlobalAveragePooling2D if spec.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    return pooling()(features)


def _flatten_head(features, spec: HeadSpec, config: ModelConfig):
    # On vector features Flatten changes nothing: the head is then a linear model on the features.
    return keras.layers.Flatten()(features)


def _mlp_head(features, spec: HeadSpec, config: ModelConfig):
    x = features if len(features.shape) == 2 else keras.layers.GlobalAveragePooling2D()(features)
    for width in spec.widths:
        x = _normalised_relu(keras.layers.Dense(width, use_bias=not config.batch_norm)(x), config)
    return x


def _conv_head(features, spec: HeadSpec, config: ModelConfig):
    x = features
    for step in spec.steps:
        if step == MAX_POOL:
            # "same" padding keeps a 1x1 map 1x1 instead of failing on an empty output
            x = keras.layers.MaxPooling2D(pool_size=2, padding="same")(x)
        elif step == SPATIAL_DROPOUT:
            x = keras.layers.SpatialDropout2D(config.dropout)(x)
        elif step == RESIDUAL:
            x = _residual_block(x, config)
        else:
            x = _normalised_relu(_convolution(x, step, config), config)
    return keras.layers.GlobalAveragePooling2D()(x)


# --- building blocks ----------------------------------------------------------------------


def _convolution(x, filters: int, config: ModelConfig):
    # A bias right before batch normalisation is cancelled by it, so it is left out.
    return keras.layers.Conv2D(filters, config.kernel_size, padding="same", use_bias=not config.batch_norm)(x)


def _normalised_relu(x, config: ModelConfig):
    """Batch normalisation (when configured) then ReLU, applied to a linear conv or dense output."""
    if config.batch_norm:
        x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def _residual_block(x, config: ModelConfig):
    """Two convolutions keeping the channel count, added to the block's input, then ReLU."""
    channels = int(x.shape[-1])
    inner = _normalised_relu(_convolution(x, channels, config), config)
    inner = _convolution(inner, channels, config)
    if config.batch_norm:
        inner = keras.layers.BatchNormalization()(inner)
    return keras.layers.ReLU()(keras.layers.Add()([x, inner]))


def _check_dropout(spec: HeadSpec, rate: float) -> None:
    if SPATIAL_DROPOUT in spec.steps and not 0.0 <= rate < 1.0:
        raise PatchworkError(f"head {spec.text!r}: model.dropout must be below 1 for 'd', got {rate}")
