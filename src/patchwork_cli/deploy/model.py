"""The deployable model: raw uint8 pixels in, the run's per-class probabilities out.

It chains what extract and train did to an image -- pixels to float, the project's
feature extractor (its preprocessing and pooling inside it), the rounding of the
features to the feature store's dtype, and the run's head -- into one Keras model made
of standard layers only, so `keras.models.load_model` needs no custom objects, and
`Model.export` turns it into a SavedModel for TF Serving. The rounding matters: the
head was trained on (and the run's predictions computed from) float16 features by
default, so without it the model's outputs would drift from the run's predictions.

Beside model.keras and the SavedModel goes model.tflite, converted from that SavedModel:
the file LiteRT runs (and OpenVINO reads), as EfficientNet-Lite is deployed on phones,
and what `predict --model` runs when an engine is installed. It is checked against the
Keras model on a fixed batch when written, so an export never carries one that strays.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store import runs
from patchwork_cli.store.features import identity_difference, normalised_identity
from patchwork_cli.store.project import Project
from patchwork_cli.util.tensorflow_runtime import start_tensorflow

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
INPUT_NAME = "pixels"
# max |model.tflite - model.keras| of any probability on the check batch; measured: 6e-8 (LiteRT), 3e-6 (OpenVINO)
TFLITE_TOLERANCE = 1e-4


def end_to_end_model(project: Project, run_dir: Path):
    """The run's head behind the extractor that made its features, as one keras.Model on uint8 images."""
    extractor, identity = run_extractor(project, run_dir)
    import keras

    head = keras.models.load_model(Path(run_dir) / runs.MODEL_FILE, compile=False)
    pixels = keras.Input((*extractor.imshape, extractor.channels), dtype="uint8", name=INPUT_NAME)
    # Rescaling by 1 is a standard, serialisable cast: to float32 here, to the store's dtype below.
    features = without_lambdas(extractor.model)(keras.layers.Rescaling(1.0, name="pixels_to_float")(pixels))
    if identity["dtype"] != "float32":
        features = keras.layers.Rescaling(1.0, dtype=identity["dtype"], name="feature_store_rounding")(features)
    return keras.Model(pixels, head(features), name="patchwork_" + Path(run_dir).name.replace("-", "_"))


def require_model(run_dir: Path, *, wanted: str, hint: str) -> None:
    """Refuse a run without a model.keras -- a label-propagation run -- for what needs one, in one
    line: `wanted` is what the model was wanted for ('export'), `hint` what to do instead."""
    from patchwork_cli.modeling.spec import is_labelprop

    if is_labelprop(runs.RunRecord.read(run_dir).head):
        name = Path(run_dir).name
        raise PatchworkError(f"run {name} is a label-propagation run: it has no model to {wanted}; {hint}")


def run_extractor(project: Project, run_dir: Path):
    """The extractor (extractors.loading.Extractor) whose features the run was trained on, and their
    identity as run.json records it (its precision defaulted); refused when the project's extractor
    is no longer that one. The precision is how the features were computed, not which extractor
    computed them: a run trained on fast features has the same extractor as an exact one."""
    identity = normalised_identity(runs.RunRecord.read(run_dir).features)
    if identity["name"].startswith("npy:"):
        raise PatchworkError(
            f"run {Path(run_dir).name} was trained on features imported from {identity['name'][4:]}: there is no "
            "extractor to put in front of its head; export --what labels,predictions only"
        )
    start_tensorflow()
    from patchwork_cli.extractors.loading import DEFAULT, load_extractor

    # The store records a user model by its file name only; its path is in the config.
    spec = identity["name"] if identity["name"] == DEFAULT or identity["name"].startswith("keras:") else None
    spec = spec or project.config.extractor.name
    extractor = load_extractor(spec, tuple(identity["imshape"]), identity["pooling"], base=project.directory)
    now = extractor.identity(identity["dtype"], identity["precision"])
    if now != identity:
        raise PatchworkError(
            f"run {Path(run_dir).name} was trained on features of another extractor than {spec!r} "
            f"({identity_difference(identity, now, 'then')}); "
            "restore the extractor the run was trained with to use it"
        )
    return extractor, identity


def without_lambdas(model):
    """The model with each Lambda layer replaced by a 1x1 convolution computing the same map.

    keras.applications' preprocessing (keras:NAME extractors) is a Lambda around a Python
    function, and a saved model holding one loads only where that function is registered
    as a custom object. Every such preprocessing (the caffe, tf and torch modes) is a
    per-channel affine map, the caffe one with the channel order reversed, which a 1x1
    convolution with fixed weights computes; anything else is refused.
    """
    import keras

    if not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers):
        return model
    convolutions = []

    def clone(layer):
        if not isinstance(layer, keras.layers.Lambda):
            return layer  # shared as it is, weights and all
        convolutions.append(_as_convolution(layer))
        return convolutions[-1]

    def call(layer, *args, **kwargs):
        # the Lambda was called with a mask argument, which a convolution does not take
        return layer(*args) if any(layer is c for c in convolutions) else layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=clone, call_function=call)


def _as_convolution(layer):
    import keras

    channels = int(layer.input.shape[-1])
    # f(0) is the bias; f(e_i) - f(0) is row i of the kernel, if f is affine (checked below).
    probes = np.vstack([np.zeros(channels), np.eye(channels)]).astype(np.float32)[:, None, None, :]
    values = np.asarray(layer(probes), np.float32).reshape(channels + 1, -1)
    bias, kernel = values[0], values[1:] - values[0]
    trial = np.random.default_rng(0).uniform(0, 255, (8, 1, 1, channels)).astype(np.float32)
    mapped = np.asarray(layer(trial))
    if mapped.shape != (8, 1, 1, kernel.shape[1]) or not np.allclose(mapped, trial @ kernel + bias, 1e-5, 1e-4):
        raise PatchworkError(
            f"the extractor's layer {layer.name!r} is Python code (a Lambda) that is not a per-channel "
            "linear map, so it cannot be saved as standard Keras layers"
        )
    convolution = keras.layers.Conv2D(kernel.shape[1], 1, name=f"{layer.name}_as_convolution")
    convolution.build((None, None, None, channels))
    convolution.set_weights([kernel[None, None], bias])
    return convolution


def save_model(model, directory: Path) -> list[Path]:
    """model.keras and the SavedModel (serving signature `serving_default`) into `directory`."""
    keras_path, saved_path = Path(directory) / KERAS_FILE, Path(directory) / SAVED_MODEL_DIR
    model.save(keras_path)
    model.export(str(saved_path), verbose=False)
    return [keras_path, saved_path]


def save_tflite(model, directory: Path) -> tuple[list[Path], dict]:
    """model.tflite, converted from the SavedModel that save_model wrote into `directory` and checked
    against `model`; and what the model card records of it. A model the converter cannot take gets
    no model.tflite (the record says why) rather than no export."""
    from patchwork_cli.extractors.conversion import saved_model_to_tflite

    try:
        flatbuffer = saved_model_to_tflite(Path(directory) / SAVED_MODEL_DIR)
    except PatchworkError as error:
        return [], {"file": None, "note": f"{TFLITE_FILE} not written: {error}"}
    path = Path(directory) / TFLITE_FILE
    path.write_bytes(flatbuffer)
    return [path], {"file": TFLITE_FILE, "sha256": hashlib.sha256(flatbuffer).hexdigest(), **check_tflite(model, path)}


def check_tflite(model, path: Path) -> dict:
    """Run the TFLite file at `path` on the engine `auto` picks for exact outputs and refuse it when a
    probability on the check batch strays from `model`'s by more than TFLITE_TOLERANCE; what was
    checked, for the model card (the check is skipped, and said so, when no engine is installed)."""
    from patchwork_cli.extractors.conversion import TFLITE_SUFFIX, check_batch
    from patchwork_cli.extractors.runtimes import EXACT, choose_runtime, open_file

    choice = choose_runtime("auto", EXACT)
    if choice.file != TFLITE_SUFFIX:  # Keras: no engine installed that runs a .tflite file
        return {
            "checked_on": None,
            "note": f"{TFLITE_FILE} not checked: no inference engine installed (pip install ai-edge-litert)",
        }
    height, width, channels = (int(size) for size in model.input_shape[1:])
    batch = check_batch((height, width), channels, np.uint8)
    expected = np.asarray(model.predict_on_batch(batch), np.float64)
    outputs = open_file(str(path), choice, len(batch)).predict(batch)
    difference = float(np.abs(outputs.astype(np.float64) - expected).max())
    if not difference <= TFLITE_TOLERANCE:  # NaN is refused too
        raise PatchworkError(
            f"{TFLITE_FILE} on {choice.runtime}: its probabilities on the check batch differ from {KERAS_FILE}'s by "
            f"up to {difference:.2g} (at most {TFLITE_TOLERANCE:g} allowed); nothing was exported (a conversion bug: "
            "tell us)"
        )
    return {
        "checked_on": choice.runtime,
        "max_abs_difference": float(f"{difference:.2g}"),
        "tolerance": TFLITE_TOLERANCE,
    }


def load_exported(directory: Path):
    """The model.keras of an exported directory (checked to exist before TensorFlow starts)."""
    path = Path(directory) / KERAS_FILE
    if not path.is_file():
        raise PatchworkError(f"{directory}: not an exported patchwork model (no {KERAS_FILE}); see 'patchwork export'")
    start_tensorflow()
    import keras

    return keras.models.load_model(path, compile=False)
