"""The one rule for which part of the work a labels.csv row is in, and the label counts per part.

An excluded row is in no part. Of the rest, a validation row is held out: scored, never learnt
from, never worth labelling for the model's sake. Every other row is a training row. Training,
evaluation, status and sampling all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from patchwork_cli.store.label_schema import EXCLUDE, VALIDATION


@dataclass(frozen=True)
class Parts:
    """Boolean masks over the table's rows: `train` and `validation` are disjoint and leave out
    the `excluded` rows."""

    train: np.ndarray
    validation: np.ndarray
    excluded: np.ndarray

    @classmethod
    def of(cls, table: pd.DataFrame) -> Parts:
        return cls.from_flags(table[VALIDATION].to_numpy(bool), table[EXCLUDE].to_numpy(bool))

    @classmethod
    def from_flags(cls, validation: np.ndarray, exclude: np.ndarray) -> Parts:
        validation, exclude = np.asarray(validation, bool), np.asarray(exclude, bool)
        return cls(train=~validation & ~exclude, validation=validation & ~exclude, excluded=exclude)


def label_summary(table: pd.DataFrame, classes: list[str]) -> dict:
    """Counts of images, labelling completeness and per-class positives / negatives.

    Completeness counts rows that are not excluded: "full" has every class labelled,
    "partial" some, "none" none. Per-class counts leave excluded rows out and split
    the rest into training (not validation) and validation rows.
    """
    parts = Parts.of(table)
    values = table[classes].to_numpy(dtype=np.float64)
    labelled_count = (~np.isnan(values)).sum(axis=1)
    kept = ~parts.excluded
    # counted over the labelled rows alone: a few thousand of a million, where a mask per class and
    # part over every row took 0.15 s at a million rows
    labelled = np.flatnonzero(labelled_count)
    cells = values[labelled]
    counts = {
        (part, value): ((cells == value) & rows[labelled, None]).sum(axis=0).tolist()
        for part, rows in (("train", parts.train), ("validation", parts.validation))
        for value in (1, 0)
    }
    per_class = {
        name: {
            part: {"positive": counts[part, 1][k], "negative": counts[part, 0][k]} for part in ("train", "validation")
        }
        for k, name in enumerate(classes)
    }
    return {
        "images": int(len(table)),
        "excluded": int(parts.excluded.sum()),
        "validation": int(parts.validation.sum()),
        "labelled": {
            "full": int(((labelled_count == len(classes)) & kept).sum()),
            "partial": int(((labelled_count > 0) & (labelled_count < len(classes)) & kept).sum()),
            "none": int(((labelled_count == 0) & kept).sum()),
        },
        "classes": per_class,
    }
