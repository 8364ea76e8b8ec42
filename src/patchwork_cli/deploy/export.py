"""patchwork export: what leaves the project -- labels, predictions, a deployable model and its card.

Everything is written into a staging directory beside the destination and moved in
only when complete, so a failed export leaves the destination as it was. Relative
image paths in the exported CSVs are relative to the export directory (as they are
relative to the project directory in labels.csv), so `patchwork init --labels` run
from there finds the images. Labels and predictions need no TensorFlow: only the model
part imports it (from deployment.py).
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from pathlib import Path

import pandas as pd

from patchwork_cli import __version__
from patchwork_cli.errors import PatchworkError
from patchwork_cli.store import runs
from patchwork_cli.store.config import MULTICLASS, MULTILABEL
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.label_table import LABELS_NAME, write_label_table
from patchwork_cli.store.paths import relative_to
from patchwork_cli.store.project import Project
from patchwork_cli.store.run_metrics import RunMetrics

PARTS = ("model", "labels", "predictions")
PREDICTIONS_FILE = "predictions.csv"
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "model_card.md"
PROBABILITY_FORMAT = "%.6g"
# predictions.csv's first column, as `patchwork predict` prints it too: the image (theirs, not labels.csv's)
PATH_COLUMN = "filepath"


def parse_parts(text: str) -> list[str]:
    """'labels,predictions' -> the parts to export, in their canonical order."""
    asked = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in asked if part not in PARTS]
    if unknown or not asked:
        raise PatchworkError(f"--what: expected a comma-separated list of {', '.join(PARTS)}, got {text!r}")
    return [part for part in PARTS if part in asked]


def export(
    project: Project, *, out: Path, run_id: str | None = None, parts: list[str], force: bool = False
) -> tuple[list[Path], list[str]]:
    """Write the asked `parts` into `out`; returns the paths written there and warnings for the person
    (a model.tflite not written, or not checked).

    Refused before anything is written: a non-empty `out` without `force`, an unknown
    run, a run whose extractor cannot be rebuilt, a model.tflite that strays from model.keras.
    """
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise PatchworkError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PatchworkError(f"{out}: directory is not empty; pass --force to write into it")
    needs_run = "model" in parts or "predictions" in parts
    run_dir = runs.resolve_run(project.directory, run_id) if needs_run else None
    model = None
    if "model" in parts:
        from patchwork_cli.deploy.model import end_to_end_model, require_model

        require_model(
            run_dir,
            wanted="export",
            hint="export --what labels,predictions writes its predictions; to export a model, train one "
            "(patchwork train --head pool:avg)",
        )
        model = end_to_end_model(project, run_dir)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.export-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        table = project.labels()
        filepaths = relative_to(table[FILEPATH], project.directory, out)
        written, warnings = [], []
        if model is not None:
            from patchwork_cli.deploy.model import save_model, save_tflite

            written += save_model(model, staging)
            tflite_paths, tflite = save_tflite(model, staging)
            written += tflite_paths
            warnings += [tflite["note"]] if "note" in tflite else []
            written += write_model_card(staging, run_dir, [int(size) for size in model.input_shape[1:]], tflite)
        if "labels" in parts:
            written.append(staging / LABELS_NAME)
            write_label_table(table.assign(**{FILEPATH: filepaths}), written[-1], project.classes)
        if "predictions" in parts:
            written.append(staging / PREDICTIONS_FILE)
            match = runs.run_match(run_dir, table[FILEPATH].tolist(), project.directory)
            write_predictions(written[-1], run_dir, match, filepaths)
        return _move_into(staging, out, [path.name for path in written]), warnings
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_predictions(path: Path, run_dir: Path, match, filepaths: list[str]) -> None:
    """filepath and one probability column per class of the run, for each labels.csv row (`match`
    says where its prediction is); empty cells where a row has none."""
    classes = runs.RunRecord.read(run_dir).classes
    probabilities = runs.read_run_array(run_dir, runs.PREDICTIONS_NAME, match)
    frame = pd.DataFrame(probabilities, columns=classes)
    frame.insert(0, PATH_COLUMN, filepaths)
    frame.to_csv(path, index=False, float_format=PROBABILITY_FORMAT, na_rep="", lineterminator="\n")


def _move_into(staging: Path, out: Path, names: list[str]) -> list[Path]:
    if not out.exists():
        os.replace(staging, out)  # the common case: the whole export appears at once
        return [out / name for name in names]
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # a SavedModel directory of an earlier export (--force)
        os.replace(staging / name, target)
    return [out / name for name in names]


# --- the model card ---------------------------------------------------------------------


def write_model_card(directory: Path, run_dir: Path, input_shape: list[int], tflite: dict) -> list[Path]:
    """model_card.json (for machines) and model_card.md (for people) describing the exported model
    (`tflite`: deployment.save_tflite's record of model.tflite)."""
    metrics = RunMetrics.read(run_dir)
    card = model_card(run_dir, input_shape, tflite, metrics)
    runs.write_json(directory / CARD_JSON, card)
    (directory / CARD_MARKDOWN).write_text(card_markdown(card, metrics), encoding="utf-8")
    return [directory / CARD_JSON, directory / CARD_MARKDOWN]


def model_card(run_dir: Path, input_shape: list[int], tflite: dict, metrics: RunMetrics) -> dict:
    run = runs.RunRecord.read(run_dir)
    extractor = run.features
    task = run.task
    meaning = (
        "softmax probabilities over the classes (each row sums to 1), in the order of 'classes'"
        if task == MULTICLASS
        else "one independent sigmoid probability per class, in the order of 'classes'"
    )
    return {
        "model": f"patchwork run {run.run_id}",
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "patchwork_version": __version__,
        "classes": run.classes,
        "task": task,
        "input": {
            "shape": input_shape,
            "dtype": "uint8",
            "pixels": "RGB (or grey with 1 channel) values 0..255, resized to height x width "
            "(bilinear, aspect ratio not kept) as patchwork extract resizes them",
        },
        "output": {
            "shape": [len(run.classes)],
            "dtype": "float32",
            "meaning": meaning,
        },
        "files": {
            "keras": "model.keras",
            "saved_model": "saved_model (signature serving_default: input 'pixels', output 'output_0')",
            **({"tflite": tflite["file"]} if tflite["file"] else {}),
        },
        "tflite": tflite,
        "extractor": {key: extractor[key] for key in ("name", "weights_sha256", "pooling", "output_shape", "dtype")},
        "head": run.head,
        "loss": run.output,
        "training": {
            key: getattr(run, key) for key in ("seed", "epochs", "train_rows", "validation_rows", "labelled_images")
        },
        "metrics": metrics.as_dict(),
        "label_counts": runs.read_json(run_dir / runs.LABEL_COUNTS_FILE),
    }


# How each task's model card describes the output.
_OUTPUTS = {MULTILABEL: "one sigmoid probability each", MULTICLASS: "a softmax over them, one class per image"}


def card_markdown(card: dict, metrics: RunMetrics) -> str:
    from patchwork_cli.evaluation.tables import format_metrics_table

    height, width, channels = card["input"]["shape"]
    extractor = card["extractor"]
    pooled = f", {extractor['pooling']}-pooled" if extractor["pooling"] else ""
    counts = card["label_counts"]
    lines = [
        f"# {card['model']}",
        "",
        f"Exported {card['exported']} by patchwork {card['patchwork_version']}.",
        "",
        f"- **Classes** ({len(card['classes'])}, {_OUTPUTS[card['task']]}): {', '.join(card['classes'])}",
        f"- **Input**: uint8 images of {height}x{width}x{channels}, pixel values 0..255, resized without keeping "
        "the aspect ratio",
        f"- **Extractor**: {extractor['name']} (weights SHA-256 {extractor['weights_sha256'][:12]}...), "
        f"features {'x'.join(map(str, extractor['output_shape']))}{pooled}, rounded to {extractor['dtype']}",
        f"- **Head**: `{card['head']}`, loss {card['loss']}, {card['training']['epochs']} epochs on "
        f"{card['training']['train_rows']} training rows ({card['training']['validation_rows']} validation)",
        f"- **Labels when trained**: {counts['images']} images, {counts['labelled']['full']} fully and "
        f"{counts['labelled']['partial']} partially labelled, {counts['validation']} validation, "
        f"{counts['excluded']} excluded",
        "- **Files**: `model.keras` (`keras.models.load_model`), `saved_model/` "
        "(`tf.saved_model.load`, TF Serving; signature `serving_default`)" + _tflite_markdown(card["tflite"]),
        "",
        "## Metrics of the run (threshold 0.5)",
        "",
        "```",
        format_metrics_table(metrics),
        "```",
        "",
        "## Labels per class when trained",
        "",
        "| class | train positive | train negative | validation positive | validation negative |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, parts in counts["classes"].items():
        train, validation = parts["train"], parts["validation"]
        lines.append(
            f"| {name} | {train['positive']} | {train['negative']} | {validation['positive']} | "
            f"{validation['negative']} |"
        )
    return "\n".join(lines) + "\n"


def _tflite_markdown(tflite: dict) -> str:
    if not tflite["file"]:
        return f" ({tflite['note']})"
    checked = (
        f"probabilities within {tflite['max_abs_difference']:.1g} of model.keras' on a check batch, on "
        f"{tflite['checked_on']}"
        if tflite["checked_on"]
        else tflite["note"]
    )
    return f", `{tflite['file']}` (LiteRT / TFLite, SHA-256 {tflite['sha256'][:12]}...; {checked})"


def read_model_card(directory: Path) -> dict:
    """The card of an exported model directory; a clear error when `directory` is not one."""
    path = Path(directory) / CARD_JSON
    if not path.is_file():
        raise PatchworkError(f"{directory}: not an exported patchwork model (no {CARD_JSON}); see 'patchwork export'")
    card = runs.read_json(path)
    if not isinstance(card.get("classes"), list):
        raise PatchworkError(f"{path}: no 'classes' list")
    return card
