"""Choosing a feature extractor by name: the bundled default, keras:NAME, or the user's model.

Every extractor is a Keras model that takes float RGB (or grey) pixels in 0..255 at
the project's image shape -- its preprocessing is inside it -- and an identity that
the feature store records, so features from different extractors never mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from patchwork_cli.errors import PatchworkError
from patchwork_cli.util.checksums import file_sha256
from patchwork_cli.util.tensorflow_runtime import start_tensorflow

start_tensorflow()  # quietly, before Keras imports it
import keras  # noqa: E402

DEFAULT = "efficientnet_lite0"


@dataclass
class Extractor:
    name: str
    model: keras.Model
    weights_sha256: str
    pooling: str | None = None

    @property
    def imshape(self) -> tuple[int, int]:
        return tuple(self.model.input_shape[1:3])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[3])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.model.output_shape[1:])

    def identity(self, dtype: str, precision: str = "exact") -> dict:
        """What must match for features to belong together in one store (`precision`: what the
        runtime computed, runtimes.EXACT or FAST_OPENVINO)."""
        return {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "imshape": list(self.imshape),
            "channels": self.channels,
            "pooling": self.pooling,
            "output_shape": list(self.output_shape),
            "dtype": dtype,
            "precision": precision,
        }


def load_extractor(
    spec: str, imshape: tuple[int, int], pooling: str | None = None, base: Path | None = None
) -> Extractor:
    """The extractor named by `spec` for images of `imshape`, its feature maps pooled if asked.

    `spec` is `efficientnet_lite0`, `keras:NAME` (a keras.applications model) or a path
    to a .keras / .h5 model (relative to `base`).
    """
    if spec == DEFAULT:
        from patchwork_cli.extractors.efficientnet_lite0 import build_efficientnet_lite0, weights_checksum

        extractor = Extractor(DEFAULT, build_efficientnet_lite0(False, (*imshape, 3)), weights_checksum())
    elif spec.startswith("keras:"):
        extractor = _keras_application(spec.split(":", 1)[1], imshape)
    else:
        extractor = _user_model(spec, imshape, base)
    if pooling is not None:
        extractor = _pooled(extractor, pooling)
    return extractor


def _keras_application(name: str, imshape: tuple[int, int]) -> Extractor:
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor):
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise PatchworkError(f"unknown keras application {name!r}; known: {', '.join(known)}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints its download notice on stdout
            backbone = constructor(include_top=False, weights="imagenet", input_shape=(*imshape, 3))
    except Exception as error:  # offline, the weight download fails in several ways
        raise PatchworkError(
            f"keras:{name}: could not get its ImageNet weights ({type(error).__name__}: {error}); "
            f"this machine may be offline. Use the bundled default 'extractor: {DEFAULT}', "
            "or save a model to a local .keras file and give its path"
        ) from None
    preprocess = importlib.import_module(constructor.__module__).preprocess_input
    inputs = keras.Input((*imshape, 3))
    model = keras.Model(inputs, backbone(keras.layers.Lambda(preprocess)(inputs)), name=name)
    return Extractor(f"keras:{name}", model, _weights_sha256(backbone))


def _user_model(spec: str, imshape: tuple[int, int], base: Path | None) -> Extractor:
    path = Path(spec) if base is None else Path(base) / spec
    if path.suffix not in (".keras", ".h5"):
        raise PatchworkError(
            f"unknown extractor {spec!r}: expected {DEFAULT}, keras:NAME or a path to a .keras or .h5 model"
        )
    if not path.is_file():
        raise PatchworkError(f"{path}: no such model file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise PatchworkError(f"{path}: not a Keras model Keras can load ({type(error).__name__}: {error})") from None
    shape = model.input_shape
    if not (isinstance(shape, tuple) and len(shape) == 4 and shape[3] in (1, 3)):
        raise PatchworkError(f"{path}: expected an image model with input (height, width, 1 or 3), got {shape}")
    if shape[1:3] != (None, None) and tuple(shape[1:3]) != tuple(imshape):
        raise PatchworkError(
            f"{path}: the model takes {shape[1]}x{shape[2]} images but imshape in patchwork.yaml is "
            f"{imshape[0]}x{imshape[1]}; make them agree"
        )
    if shape[1] is None:  # a size-agnostic model: fix it at the project's shape
        inputs = keras.Input((*imshape, shape[3]))
        model = keras.Model(inputs, model(inputs))
    return Extractor(path.name, model, file_sha256(path))


def _pooled(extractor: Extractor, pooling: str) -> Extractor:
    if len(extractor.output_shape) != 3:
        return extractor  # already vectors
    pool = keras.layers.GlobalAveragePooling2D() if pooling == "avg" else keras.layers.GlobalMaxPooling2D()
    model = keras.Model(extractor.model.inputs, pool(extractor.model.outputs[0]))
    return Extractor(extractor.name, model, extractor.weights_sha256, pooling)


def _weights_sha256(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()
