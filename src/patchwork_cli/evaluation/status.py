"""What `patchwork status` reports: the label table's counts, the features' state, the latest run
and its stopping hint, duplicates and changed images. It lives in evaluation, not store, because
the latest run's headline metric and the stopping hint are evaluation's (report.stopping_hint)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from patchwork_cli.store import runs
from patchwork_cli.store.changed_images import CHANGED_NAME, scan_changes, to_review
from patchwork_cli.store.duplicate_groups import duplicate_summary
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.label_table import line_of
from patchwork_cli.store.rowindex import NO_ROW, RowRecord
from patchwork_cli.store.run_metrics import RunMetrics
from patchwork_cli.store.splits import label_summary

if TYPE_CHECKING:
    from patchwork_cli.store.project import Project

# Status looks at every image file (a stat each, 1.5 us here) up to this many extracted images;
# above, it leaves the check to `patchwork extract`, which reads every file anyway.
CHANGE_CHECK_LIMIT = 100_000


def project_status(project: Project) -> dict:
    """Everything `patchwork status` reports, as one JSON-ready dict."""
    table = project.labels()
    filepaths = table[FILEPATH]  # as the table holds it: its digest is taken in Arrow
    table_record = RowRecord.of(filepaths)  # one digest for both matches
    store = project.open_features()
    return {
        "project": str(project.directory),
        "task": project.config.task,
        **label_summary(table, project.classes),
        "features": feature_summary(store, filepaths, project.directory, table_record),
        "model": model_summary(project.directory, filepaths, table_record),
        "duplicates": duplicate_summary(project.directory, table),
        "changed_images": changed_summary(project, store, filepaths, table_record),
    }


def changed_summary(project: Project, store, filepaths, table_record: RowRecord) -> dict | None:
    """Images whose content changed since extraction and not extracted again yet, files gone, and
    the changed labelled images still to review; `checked` False when there were too many files to
    look at (CHANGE_CHECK_LIMIT). None when there is nothing to say (or no store records files)."""
    review = len(to_review(project.directory, project.store.journal))
    changed = missing = 0
    if store is not None and store.has_image_records:  # (imported vectors have none: nothing to look at)
        source = store.match(filepaths, project.directory, table_record).store_rows_of_table()
        table_rows = np.flatnonzero(source != NO_ROW)
        if len(table_rows) > CHANGE_CHECK_LIMIT:
            return {"checked": False, "changed": None, "missing": None, "to_review": review}
        table_of_store = dict(zip(source[table_rows].tolist(), table_rows.tolist(), strict=True))

        def path_of(row: int) -> str:
            return project.absolute_path(filepaths.iloc[table_of_store[row]])

        scan = scan_changes(store, source[table_rows], path_of)
        changed, missing = len(scan.changed), scan.missing
    if not (changed or missing or review):
        return None
    return {"checked": True, "changed": changed, "missing": missing, "to_review": review}


def feature_summary(
    store, filepaths: list[str], project_dir: Path, table_record: RowRecord | None = None
) -> dict | None:
    """labels.csv's images by the state of their features in `store` (images the store has no
    row for yet count as pending), the store rows no image takes, the extractor's name, and
    whether the store still follows labels.csv row for row; None before any extract (no store)."""
    if store is None:
        return None
    match = store.match(filepaths, project_dir, table_record)
    return {
        "extractor": store.identity.get("name"),
        **store.counts(match),
        "recorded": store.record is not None,
        **_order(match),
    }


def model_summary(project_dir: Path, filepaths: list[str], table_record: RowRecord | None = None) -> dict | None:
    """The latest run, its headline metric (validation macro ROC AUC, else training's), and how
    many of labels.csv's images it has no prediction for."""
    run_id = runs.latest_run(project_dir)
    if run_id is None:
        return None
    directory = runs.models_dir(project_dir) / run_id
    metrics = RunMetrics.read(directory)
    match = runs.run_match(directory, filepaths, project_dir, table_record)
    from patchwork_cli.evaluation.report import stopping_hint

    summary = {
        "run_id": run_id,
        "metric": None,
        "value": None,
        "unpredicted": _unmatched(match),
        **_order(match),
        "stop_hint": stopping_hint(project_dir),
    }
    for part, scores in metrics.parts().items():
        auc = scores.macro.roc_auc
        if auc is not None:
            return {**summary, "metric": f"{part} macro ROC AUC", "value": auc}
    return summary


def _order(match) -> dict:
    """Whether a store follows labels.csv row for row, and the first line of labels.csv (1 is
    the header) where it stops doing so: a row sorted, deleted, inserted or renamed by hand."""
    line = None if match.first_moved is None else line_of(match.first_moved)
    return {"in_order": match.in_order, "first_moved_line": line}


def _unmatched(match) -> int:
    return int((match.store_rows_of_table() == NO_ROW).sum())


_NOTE = " " * 12


def _feature_notes(features: dict) -> list[str]:
    """What status says when labels.csv and the feature store disagree, and what comes next."""
    notes = []
    if not features["recorded"]:
        notes.append(
            f"{_NOTE}the store predates records of which image each row is: the next 'patchwork extract' "
            "records them, taking labels.csv's rows to be in their order"
        )
    if not features["in_order"]:
        notes.append(
            f"{_NOTE}labels.csv's rows are not in the store's order (edited by hand, from line "
            f"{features['first_moved_line']}): each image's features are found by its filepath, nothing to do"
        )
    if features["pending"]:
        notes.append(f"{_NOTE}'patchwork extract' extracts the {features['pending']} pending image(s), and only those")
    if features["unused"]:
        notes.append(
            f"{_NOTE}{features['unused']} row(s) of the store belong to images no longer in labels.csv "
            "(deleted, or their path changed): kept, unused"
        )
    return notes


def _model_notes(model: dict) -> list[str]:
    """What status says when labels.csv and the latest run disagree, and what comes next."""
    notes = []
    if not model["in_order"]:
        notes.append(
            f"{_NOTE}labels.csv's rows are not in this run's order (from line {model['first_moved_line']}): "
            "each image's prediction is found by its filepath"
        )
    if model["unpredicted"]:
        notes.append(
            f"{_NOTE}{model['unpredicted']} image(s) have no prediction from this run (added, or their path "
            "changed): 'patchwork train' makes a run that has them"
        )
    return notes


def _changed_lines(changes: dict | None) -> list[str]:
    if changes is None:
        return []
    lines = []
    if not changes["checked"]:
        lines.append(f"changed     not checked (over {CHANGE_CHECK_LIMIT:,} images): 'patchwork extract' checks them")
    elif changes["changed"] or changes["missing"]:
        lines.append(f"changed     {changes['changed']} image(s) changed since extraction, {changes['missing']} gone")
        if changes["changed"]:
            lines.append(f"{_NOTE}'patchwork extract' extracts them again; their labels are kept")
    if changes["to_review"]:
        lead = _NOTE if lines else "changed     "
        lines.append(
            f"{lead}{changes['to_review']} labelled image(s) changed since they were labelled: review them with "
            f"'patchwork label --paths {CHANGED_NAME}'"
        )
    return lines


def format_summary(summary: dict) -> str:
    """The human-readable status table."""
    labelled = summary["labelled"]
    lines = [
        f"project     {summary['project']}  ({summary['task']})",
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
        lines.extend(_feature_notes(features))
    model = summary.get("model")
    if model is None:
        lines.append("model       none yet (patchwork train)")
    else:
        if model["metric"] is None:
            lines.append(f"model       {model['run_id']}  (no labels to score it on)")
        else:
            lines.append(f"model       {model['run_id']}  {model['metric']} {model['value']:.3f}")
        lines.extend(_model_notes(model))
        if model.get("stop_hint"):
            lines.append(f"{_NOTE}{model['stop_hint']}")
    copies = summary.get("duplicates")
    if copies is not None:
        lines.append(f"duplicates  {copies['groups']} group(s) of copies, {copies['images']} image(s)")
        if copies["split"]:
            lines.append(
                f"{_NOTE}{copies['split']} group(s) split across training and validation: "
                "their validation figures are inflated; give each group one side"
            )
    lines.extend(_changed_lines(summary.get("changed_images")))
    lines.append("")
    width = max(8, *(len(name) for name in summary["classes"]))
    lines.append(f"{'class':<{width}}  {'train +':>8} {'train -':>8}  {'val +':>8} {'val -':>8}")
    for name, counts in summary["classes"].items():
        train, val = counts["train"], counts["validation"]
        lines.append(
            f"{name:<{width}}  {train['positive']:>8} {train['negative']:>8}  {val['positive']:>8} {val['negative']:>8}"
        )
    return "\n".join(lines)
