"""patchwork.yaml: parsed into frozen dataclasses, validated at the boundary.

Every problem is one line naming the file and the dotted key, e.g.
``patchwork.yaml: training.epochs: expected an integer, got 'ten'``; an unknown key
suggests the closest valid one. The dataclasses below *are* the documented format:
project-template/patchwork.yaml mirrors them with comments.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from patchwork_cli.errors import PatchworkError, did_you_mean
from patchwork_cli.store.label_schema import FIXED_COLUMNS

# The tasks' names live in store/tasks.py and are read through here as well.
from patchwork_cli.store.tasks import MULTICLASS as MULTICLASS
from patchwork_cli.store.tasks import MULTILABEL as MULTILABEL
from patchwork_cli.store.tasks import TASKS as TASKS
from patchwork_cli.store.tasks import Task

_CLASS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]*$")


# The extractor runtimes' names, in one list. Its home is the config, where a name is taken or
# refused (store may not import extractors); extractors/runtimes.py reads it from here (extractors
# may import store) and has an engine for each name but `auto`, which chooses among them.
Runtime = Literal["auto", "keras", "litert", "openvino"]
RUNTIMES: tuple[str, ...] = typing.get_args(Runtime)
Precision = Literal["exact", "fast"]


@dataclass(frozen=True)
class ExtractorConfig:
    name: str = "efficientnet_lite0"
    pooling: Literal["avg", "max"] | None = None
    dtype: Literal["float16", "float32"] = "float16"
    batch_size: int = field(default=32, metadata={"minimum": 1})
    # what runs the model and what it may compute: see extractors/runtimes.py
    runtime: Runtime = "auto"
    precision: Precision = "exact"


@dataclass(frozen=True)
class ModelConfig:
    head: str = "auto"  # modeling/spec.py: pool:avg on feature maps, flatten on vectors
    kernel_size: int = field(default=3, metadata={"minimum": 1})
    dropout: float = field(default=0.5, metadata={"minimum": 0.0, "below": 1.0})
    batch_norm: bool = False
    output: Literal["sigmoid", "focal"] = "sigmoid"
    label_smoothing: float = field(default=0.0, metadata={"minimum": 0.0})
    focal_gamma: float = field(default=2.0, metadata={"minimum": 0.0})
    # head: labelprop (labelprop.py): neighbours per image in the graph, conjugate gradient
    # iterations, and how far labels spread (alpha in (I - alpha W) Z = Y)
    labelprop_k: int = field(default=10, metadata={"minimum": 1})
    labelprop_iterations: int = field(default=20, metadata={"minimum": 1})
    labelprop_alpha: float = field(default=0.99, metadata={"minimum": 0.0, "below": 1.0})


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = field(default=32, metadata={"minimum": 1})
    batches_per_epoch: int = field(default=50, metadata={"minimum": 1})
    epochs: int = field(default=20, metadata={"minimum": 1})
    stratify: Literal["class", "instance", "squareroot"] = "class"
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = field(default=1e-3, metadata={"minimum": 0.0})
    momentum: float = field(default=0.9, metadata={"minimum": 0.0})
    cosine_decay_steps: int | None = field(default=None, metadata={"minimum": 1})
    weight_decay: float = field(default=0.0, metadata={"minimum": 0.0})
    patience: int | None = field(default=5, metadata={"minimum": 1})
    seed: int | None = 0
    # folds of the training rows' out-of-fold predictions, which `disagree` ranks labels by
    # (training/out_of_fold.py); 0 or 1: none (disagree then reads the run's own predictions)
    label_folds: int = field(default=5, metadata={"minimum": 0})


@dataclass(frozen=True)
class PretrainConfig:
    # `patchwork pretrain` (pretraining/): SimCLR on the project's own images, no labels.
    epochs: int = field(default=10, metadata={"minimum": 1})
    # images per step; each brings two views, and the other 2 * (batch_size - 1) views are its negatives
    batch_size: int = field(default=64, metadata={"minimum": 2})
    # side of the square views trained on; the extractor's stride is 32, so at least 32
    image_size: int = field(default=96, metadata={"minimum": 32})
    # of the NT-Xent loss: lower sharpens it on the hardest negatives
    temperature: float = field(default=0.2, metadata={"above": 0.0})
    learning_rate: float = field(default=3e-4, metadata={"above": 0.0})


@dataclass(frozen=True)
class SamplingConfig:
    strategy: str = "auto"
    n: int = field(default=50, metadata={"minimum": 1})


@dataclass(frozen=True)
class LabellingConfig:
    # Multilabel projects: `n` (every unlabelled class: no) also shows the next image, so an
    # image with one class present costs two keys. Multiclass projects always move on after a class key.
    advance_after_n: bool = False


@dataclass(frozen=True)
class StorageConfig:
    # A path (relative to the project directory) or a URL: file:///shared/x.zarr, s3://bucket/x.zarr.
    features: str = "features.zarr"


@dataclass(frozen=True)
class DaskConfig:
    # TLS for `--dask tls://...`: the cluster's certificate authority, and the certificate and key
    # this project's commands present to the scheduler (paths, relative to the project directory).
    # Unset, Dask's own configuration applies (distributed.comm.tls.*).
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class Config:
    classes: list[str]
    task: Task = MULTILABEL
    imshape: list[int] = field(default_factory=lambda: [224, 224])
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    labelling: LabellingConfig = field(default_factory=LabellingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)


def storage_location(directory: Path, configured: str) -> str:
    """Where a configured store lives: an absolute local path, or a URL for fsspec.

    file:// URLs become plain paths, so that zarr writes their chunks through its local
    store (each chunk file replaced atomically) rather than through fsspec's, which
    writes in place and leaves a torn chunk when a worker dies mid-write.
    """
    parsed = urllib.parse.urlsplit(configured)
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    if "://" in configured:
        return configured
    return str(Path(directory) / Path(configured).expanduser())


def validate_class_name(name: str) -> str:
    """Return `name` if it can be a class (a CSV column and a strategy suffix like maxent:NAME)."""
    if not isinstance(name, str) or not _CLASS_NAME.match(name) or name != name.strip():
        raise PatchworkError(
            f"invalid class name {name!r}: use letters, digits, '_', '-', '.' or inner spaces "
            "(no ',' or ':', no leading or trailing space)"
        )
    if name in FIXED_COLUMNS:
        raise PatchworkError(f"invalid class name {name!r}: it is a reserved labels.csv column")
    return name


def validate_classes(classes: list[str]) -> list[str]:
    if not classes:
        raise PatchworkError("at least one class is needed")
    seen = set()
    for name in classes:
        validate_class_name(name)
        if name in seen:
            raise PatchworkError(f"class {name!r} is given twice")
        seen.add(name)
    return list(classes)


def out_of_bounds(cls, name: str, value) -> str | None:
    """What is wrong with `value` for the key `name` of the section `cls` (a config dataclass)
    under the bounds its field declares, e.g. 'must be at least 2, got 1'; None when it is within
    them. For values that do not come through patchwork.yaml, such as a command's flags."""
    (spec,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return _out_of_bounds(spec, value)


def parse_config(data: object, source: str) -> Config:
    """Build a Config from the YAML document `data`; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise PatchworkError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    config = _build(Config, data, prefix="", source=source)
    try:
        validate_classes(config.classes)
    except PatchworkError as error:
        raise PatchworkError(f"{source}: classes: {error}") from None
    if len(config.imshape) != 2 or min(config.imshape) < 1:
        raise PatchworkError(f"{source}: imshape: expected [height, width] of positive integers, got {config.imshape}")
    _check_strategy_class(config, source)
    _check_storage(config.storage, source)
    _check_dask_tls(config.dask, source)
    return config


def load_config(path: Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PatchworkError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PatchworkError(f"{where}: invalid YAML: {problem}") from None
    return parse_config(data, str(path))


def replace_classes(text: str, classes: list[str]) -> str:
    """Rewrite the top-level `classes:` entry of a patchwork.yaml text, keeping every comment."""
    return replace_top_level(text, "classes", list(classes))


def replace_top_level(text: str, key: str, value: object) -> str:
    """Rewrite the top-level `key:` entry of a patchwork.yaml text, keeping every comment.

    PyYAML cannot round-trip comments, and the commented file is documentation the
    user may have edited, so only that entry is replaced (as one flow-style line) and
    the result is re-parsed to prove nothing else changed.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"^{re.escape(key)}\s*:", line)), None)
    flow = f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("...\n").strip()
    flow += "\n"
    if start is None:
        new_text = flow + text
    else:
        end = start + 1
        # A block entry continues on indented lines, "- item" lines and blank lines.
        while end < len(lines) and (lines[end][:1] in (" ", "\t", "-") or not lines[end].strip()):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():  # the blank lines after it stay
            end -= 1
        new_text = "".join(lines[:start]) + flow + "".join(lines[end:])
    before, after = yaml.safe_load(text) or {}, yaml.safe_load(new_text)
    before[key] = value
    if before != after:
        raise PatchworkError(f"could not update {key!r} in patchwork.yaml safely; edit it by hand")
    return new_text


def _check_strategy_class(config: Config, source: str) -> None:
    strategy = config.sampling.strategy
    if ":" in strategy:
        name = strategy.split(":", 1)[1]
        if name not in config.classes:
            raise PatchworkError(
                f"{source}: sampling.strategy: unknown class {name!r} in {strategy!r}"
                f"{did_you_mean(name, config.classes)}; classes are {', '.join(config.classes)}"
            )


def _check_storage(storage: StorageConfig, source: str) -> None:
    location = storage.features
    parsed = urllib.parse.urlsplit(location)
    if not location.strip():
        raise PatchworkError(f"{source}: storage.features: expected a path or URL, got {location!r}")
    if parsed.scheme == "file" and (parsed.netloc not in ("", "localhost") or not parsed.path):
        raise PatchworkError(
            f"{source}: storage.features: a file URL needs an absolute path (file:///shared/x.zarr), got {location!r}"
        )


def _check_dask_tls(settings: DaskConfig, source: str) -> None:
    # A TLS client needs both its certificate and the authority to check the scheduler's with; the key
    # may be appended to the certificate file, as Dask allows.
    given = [name for name, value in dataclasses.asdict(settings).items() if value is not None]
    for name in given:
        if not getattr(settings, name).strip():
            raise PatchworkError(f"{source}: dask.{name}: expected a file path, got {getattr(settings, name)!r}")
    if given and not {"tls_ca_file", "tls_cert"} <= set(given):
        missing = "dask.tls_cert" if "tls_ca_file" in given else "dask.tls_ca_file"
        raise PatchworkError(
            f"{source}: {missing}: needed with dask.{given[0]} (TLS takes a CA file and a certificate)"
        )


def _out_of_bounds(spec: dataclasses.Field, value) -> str | None:
    if value is None:
        return None
    minimum, above, below = (spec.metadata.get(bound) for bound in ("minimum", "above", "below"))
    # written as "not within", so that a NaN is outside every bound
    if minimum is not None and not value >= minimum:
        return f"must be at least {minimum}, got {value!r}"
    if above is not None and not value > above:
        return f"must be above {above:g}, got {value!r}"
    if below is not None and not value < below:
        return f"must be below {below:g}, got {value!r}"
    return None


def _is_finite(number: int | float) -> bool:
    # .nan and .inf are YAML floats, but no rate or weight may be one (NaN passes every minimum)
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer too large for a float
        return False


def _build(cls, data: dict, prefix: str, source: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            hint = did_you_mean(prefix + str(key), [prefix + name for name in known])
            raise PatchworkError(f"{source}: unknown key '{prefix}{key}'{hint}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in known.items():
        key = prefix + name
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise PatchworkError(f"{source}: missing key '{key}'")
            continue
        value = _convert(data[name], hints[name], key, source)
        problem = _out_of_bounds(spec, value)
        if problem is not None:
            raise PatchworkError(f"{source}: {key}: {problem}")
        values[name] = value
    return cls(**values)


def _convert(value, annotation, key: str, source: str):
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(value, inner, key, source)
    if origin is Literal:
        if value in args:
            return value
        expected = "one of " + ", ".join(repr(arg) for arg in args)
    elif origin is list:
        if isinstance(value, list):
            return [_convert(item, args[0], f"{key}[{i}]", source) for i, item in enumerate(value)]
        expected = "a list"
    elif dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return _build(annotation, value, prefix=key + ".", source=source)
        expected = "a mapping of keys"
    elif annotation is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "an integer"
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _is_finite(value):
            return float(value)
        expected = "a finite number"
    elif annotation is str:
        if isinstance(value, str):
            return value
        expected = "a string"
    else:  # pragma: no cover - a new field type must be taught to this function
        raise TypeError(f"unsupported config type {annotation!r}")
    raise PatchworkError(f"{source}: {key}: expected {expected}, got {value!r}")
