"""What `patchwork status` reports: counts over the label table (more parts join as they land)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def label_summary(table: pd.DataFrame, classes: list[str]) -> dict:
    """Counts of images, labelling completeness and per-class positives / negatives.

    Completeness counts rows that are not excluded: "full" has every class labelled,
    "partial" some, "none" none. Per-class counts leave excluded rows out and split
    the rest into training (not validation) and validation rows.
    """
    excluded = table["exclude"].to_numpy(dtype=bool)
    validation = table["validation"].to_numpy(dtype=bool)
    values = table[classes].to_numpy(dtype=np.float64)
    labelled_count = (~np.isnan(values)).sum(axis=1)
    kept = ~excluded
    per_class = {}
    for k, name in enumerate(classes):
        column = values[:, k]
        per_class[name] = {
            part: {"positive": int(((column == 1) & rows).sum()), "negative": int(((column == 0) & rows).sum())}
            for part, rows in (("train", kept & ~validation), ("validation", kept & validation))
        }
    return {
        "images": int(len(table)),
        "excluded": int(excluded.sum()),
        "validation": int((validation & kept).sum()),
        "labelled": {
            "full": int(((labelled_count == len(classes)) & kept).sum()),
            "partial": int(((labelled_count > 0) & (labelled_count < len(classes)) & kept).sum()),
            "none": int(((labelled_count == 0) & kept).sum()),
        },
        "classes": per_class,
    }


def format_summary(project_dir: str, summary: dict) -> str:
    """The human-readable status table."""
    labelled = summary["labelled"]
    lines = [
        f"project     {project_dir}",
        f"images      {summary['images']}  (excluded {summary['excluded']}, validation {summary['validation']})",
        f"labelled    {labelled['full']} fully, {labelled['partial']} partially, {labelled['none']} not at all",
        "",
    ]
    width = max(8, *(len(name) for name in summary["classes"]))
    lines.append(f"{'class':<{width}}  {'train +':>8} {'train -':>8}  {'val +':>8} {'val -':>8}")
    for name, counts in summary["classes"].items():
        train, val = counts["train"], counts["validation"]
        lines.append(
            f"{name:<{width}}  {train['positive']:>8} {train['negative']:>8}  {val['positive']:>8} {val['negative']:>8}"
        )
    return "\n".join(lines)
