"""metrics.json: a run's scores on the labels of its day, and how much it agreed with the run
before it. `RunMetrics` reads and writes the file, here only; everything else reads its
attributes. evaluation/metrics.py computes the numbers; `patchwork evaluate` writes the same
record, scored on the current labels, into reports/<run>/.

A file written by an older patchwork lacks the keys added since, which read as their defaults;
keys this version does not know are ignored (as RunRecord does with run.json). A record read
from any file patchwork has written is written back as the same JSON (a model card copies it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from patchwork_cli.store.runs import read_json, write_json

METRICS_FILE = "metrics.json"


def _read(cls, data: dict):
    """A `cls` from a dict of its fields: missing keys take their defaults, unknown ones are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


def _read_each(cls, data: dict) -> dict:
    return {name: _read(cls, values) for name, values in data.items()}


@dataclass(frozen=True, kw_only=True)
class Scores:
    """A class's scores on a part's labelled cells (ClassScores), or their mean over the classes
    where each is defined (a part's macro). None: undefined (see evaluation.metrics)."""

    roc_auc: float | None = None
    average_precision: float | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


@dataclass(frozen=True, kw_only=True)
class ClassScores(Scores):
    positives: int = 0  # the part's labelled cells of the class
    negatives: int = 0


@dataclass(frozen=True, kw_only=True)
class ClassifierClass:
    """A class of a multiclass run scored as a classifier: of the rows predicted as the class, the
    share that are it (precision); of its `rows`, the share predicted as it (recall)."""

    precision: float = 0.0
    recall: float | None = None
    f1: float | None = None
    rows: int = 0


@dataclass(frozen=True, kw_only=True)
class Confusion:
    classes: list[str] = field(default_factory=list)
    matrix: list[list[int]] = field(default_factory=list)  # matrix[i][j]: rows of true class i predicted as j


@dataclass(frozen=True, kw_only=True)
class Classifier:
    """A multiclass run's top class against the true one, on a part's rows with one positive."""

    rows: int = 0
    accuracy: float | None = None
    macro_f1: float | None = None
    classes: dict[str, ClassifierClass] = field(default_factory=dict)
    confusion: Confusion = field(default_factory=Confusion)

    @classmethod
    def from_dict(cls, data: dict) -> Classifier:
        classes = _read_each(ClassifierClass, data.get("classes", {}))
        return _read(cls, {**data, "classes": classes, "confusion": _read(Confusion, data.get("confusion", {}))})


@dataclass(frozen=True, kw_only=True)
class PartScores:
    """One part's scores (validation or training): macro, per class, and as a classifier for a
    multiclass run (None for a multilabel one: the file has no such key)."""

    macro: Scores = field(default_factory=Scores)
    classes: dict[str, ClassScores] = field(default_factory=dict)
    multiclass: Classifier | None = None

    @property
    def has_labels(self) -> bool:
        """Whether any class had labelled cells in the part."""
        return any(scores.positives + scores.negatives > 0 for scores in self.classes.values())

    @classmethod
    def from_dict(cls, data: dict) -> PartScores:
        multiclass = data.get("multiclass")
        return cls(
            macro=_read(Scores, data.get("macro", {})),
            classes=_read_each(ClassScores, data.get("classes", {})),
            multiclass=None if multiclass is None else Classifier.from_dict(multiclass),
        )

    def as_dict(self) -> dict:
        classes = {name: dataclasses.asdict(scores) for name, scores in self.classes.items()}
        out = {"macro": dataclasses.asdict(self.macro), "classes": classes}
        if self.multiclass is not None:
            out["multiclass"] = dataclasses.asdict(self.multiclass)
        return out


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """Cohen's kappa of a run's predictions against run `previous_run`'s on `rows` unlabelled images."""

    previous_run: str
    kappa: float
    rows: int


@dataclass(frozen=True, kw_only=True)
class RunMetrics:
    validation: PartScores = field(default_factory=PartScores)
    train: PartScores = field(default_factory=PartScores)
    # None: no previous run to compare with (or it predicts other classes, or too few rows)
    agreement: Agreement | None = None
    # False for a run trained before runs recorded their agreement: its file has no such key,
    # and a copy of it (the model card's) has none either.
    agreement_recorded: bool = True

    def parts(self) -> dict[str, PartScores]:
        """validation, then training: the order the tables show them in."""
        return {"validation": self.validation, "train": self.train}

    @classmethod
    def read(cls, directory: Path) -> RunMetrics:
        """The metrics.json of `directory` (a run's, or its report's)."""
        return cls.from_dict(read_json(Path(directory) / METRICS_FILE))

    def write(self, directory: Path) -> None:
        write_json(Path(directory) / METRICS_FILE, self.as_dict())

    @classmethod
    def from_dict(cls, data: dict) -> RunMetrics:
        agreement = data.get("agreement")
        return cls(
            validation=PartScores.from_dict(data.get("validation", {})),
            train=PartScores.from_dict(data.get("train", {})),
            agreement=None if agreement is None else _read(Agreement, agreement),
            agreement_recorded="agreement" in data,
        )

    def as_dict(self) -> dict:
        """The JSON of metrics.json (and of `evaluate --json`)."""
        out = {part: scores.as_dict() for part, scores in self.parts().items()}
        if self.agreement_recorded:
            out["agreement"] = None if self.agreement is None else dataclasses.asdict(self.agreement)
        return out
