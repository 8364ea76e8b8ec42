"""What `patchwork status` reports: counts over the label table (more parts join as they land)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import runs


def project_status(project) -> dict:
    """Everything `patchwork status` reports, as one JSON-ready dict."""
    table = project.labels()
    return {
        "project": str(project.directory),
        **label_summary(table, project.classes),
        "features": feature_summary(project.features_location, len(table)),
        "model": model_summary(project.directory),
    }


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


def feature_summary(store_location: str, rows: int) -> dict | None:
    """Rows extracted, failed and pending, and the extractor's name; None before any extract.

    Rows appended since the last extract (the store has not grown yet) count as pending.
    """
    if "://" not in store_location and not Path(store_location).exists():
        return None
    from .features import FeatureStore  # zarr costs half a second: only when there is a store

    store = FeatureStore.open(store_location)
    if store is None:
        return None
    counts = store.counts()
    counts["pending"] += max(0, rows - store.rows)
    return {"extractor": store.identity.get("name"), **counts}


def model_summary(project_dir: Path) -> dict | None:
    """The latest run and its headline metric (validation macro ROC AUC, else training's)."""
    run_id = runs.latest_run(project_dir)
    if run_id is None:
        return None
    directory = runs.models_dir(project_dir) / run_id
    metrics = runs.read_json(directory / runs.METRICS_FILE)
    for part in ("validation", "train"):
        auc = metrics.get(part, {}).get("macro", {}).get("roc_auc")
        if auc is not None:
            return {"run_id": run_id, "metric": f"{part} macro ROC AUC", "value": auc}
    return {"run_id": run_id, "metric": None, "value": None}


def format_summary(summary: dict) -> str:
    """The human-readable status table."""
    labelled = summary["labelled"]
    lines = [
        f"project     {summary['project']}",
        f"images      {summary['images']}  (excluded {summary['excluded']}, validation {summary['validation']})",
        f"labelled    {labelled['full']} fully, {labelled['partial']} partially, {labelled['none']} not at all",
    ]
    features = summary.get("features")
    if features is None:
        lines.append("features    not extracted yet (patchwork extract)")
    else:
        lines.append(
            f"features    {features['done']} done, {features['failed']} failed, {features['pending']} pending"
            f"  ({features['extractor']})"
        )
    model = summary.get("model")
    if model is None:
        lines.append("model       none yet (patchwork train)")
    elif model["metric"] is None:
        lines.append(f"model       {model['run_id']}  (no labels to score it on)")
    else:
        lines.append(f"model       {model['run_id']}  {model['metric']} {model['value']:.3f}")
    lines.append("")
    width = max(8, *(len(name) for name in summary["classes"]))
    lines.append(f"{'class':<{width}}  {'train +':>8} {'train -':>8}  {'val +':>8} {'val -':>8}")
    for name, counts in summary["classes"].items():
        train, val = counts["train"], counts["validation"]
        lines.append(
            f"{name:<{width}}  {train['positive']:>8} {train['negative']:>8}  {val['positive']:>8} {val['negative']:>8}"
        )
    return "\n".join(lines)
