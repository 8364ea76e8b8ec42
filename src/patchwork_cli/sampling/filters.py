"""Sampling filters (`--from`): which rows of the label table are candidates.

A filter is a name, or a name and an argument (`contains:dog`, `subset:site A`); each
becomes a boolean mask over the rows and several combine with AND. Excluded rows are
out unless the `excluded` filter is among them. "labeled" means every class labelled
and "partial" some but not all, as `patchwork status` counts them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError, did_you_mean
from patchwork_cli.store.label_schema import EXCLUDE, SUBSET, VALIDATION

FILTERS = (
    "unlabeled",
    "partial",
    "labeled",
    "all",
    "excluded",
    "validation",
    "unlabeled:C",
    "contains:C",
    "lacks:C",
    "subset:V",
)
DEFAULT_FILTERS = ("unlabeled",)


def check_filters(specs: Sequence[str], classes: Sequence[str]) -> list[tuple[str, str | None]]:
    """Parse filter specs into (form, argument) pairs, the form as FILTERS spells it
    ("contains:C", argument "dog"); an unknown filter or class lists the valid ones."""
    parsed = []
    for spec in specs:
        name, colon, argument = spec.partition(":")
        if not colon and name in FILTERS:
            parsed.append((name, None))
        elif colon and f"{name}:C" in FILTERS and argument:
            parsed.append((f"{name}:C", check_class(argument, classes)))
        elif colon and name == "subset":
            parsed.append(("subset:V", argument))
        else:
            raise PatchworkError(
                f"unknown filter {spec!r}{did_you_mean(spec, FILTERS)}; filters: {', '.join(FILTERS)} "
                "(C a class, V a subset value)"
            )
    return parsed


def check_class(name: str, classes: Sequence[str]) -> str:
    if name not in classes:
        raise PatchworkError(f"unknown class {name!r}{did_you_mean(name, classes)}; classes: {', '.join(classes)}")
    return name


def filter_mask(table: pd.DataFrame, classes: Sequence[str], specs: Sequence[str]) -> np.ndarray:
    """The rows of `table` that pass every filter of `specs` (AND), as a boolean array."""
    parsed = check_filters(specs, classes)
    # Column by column: at a million rows, one (N, C) copy of the class columns costs more than the rest.
    values = {name: table[name].to_numpy(dtype=np.float64) for name in classes}
    labelled = sum((~np.isnan(column)).astype(np.int8) for column in values.values()) if values else 0
    excluded = table[EXCLUDE].to_numpy(dtype=bool)
    # Excluded rows are out unless asked for, whatever the order of the filters.
    mask = np.ones(len(table), dtype=bool) if ("excluded", None) in parsed else ~excluded
    for form, argument in parsed:
        column = values[argument] if form.endswith(":C") else None
        if form == "unlabeled":
            mask &= labelled == 0
        elif form == "partial":
            mask &= (labelled > 0) & (labelled < len(classes))
        elif form == "labeled":
            mask &= labelled == len(classes)
        elif form == "excluded":
            mask &= excluded
        elif form == "validation":
            mask &= table[VALIDATION].to_numpy(dtype=bool)
        elif form == "unlabeled:C":
            mask &= np.isnan(column)
        elif form == "contains:C":
            mask &= column == 1
        elif form == "lacks:C":
            mask &= column == 0
        elif form == "subset:V":
            mask &= (table[SUBSET] == argument).to_numpy()
    return mask
