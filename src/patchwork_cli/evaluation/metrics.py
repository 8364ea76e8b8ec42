"""How good is a model: metrics on partly labelled data, a text table, and diagnostic plots.

Inputs are arrays over the label table's N rows and C classes:
  probabilities (N, C) predicted probability, NaN where an image has no prediction (no features)
  labels        (N, C) 1 positive, 0 negative, NaN unlabelled
  validation    (N,)   bool, the row is held out for validation
  exclude       (N,)   bool, the row is never used (nor evaluated)

"Training" cells are labelled cells of rows that are neither validation nor excluded;
"validation" cells are labelled cells of validation rows that are not excluded. Each class
is scored on its own labelled cells only, so a partly labelled row still counts for the
classes it has labels for. A multiclass run is scored as a classifier too: its top class
against the one positive of each row that has exactly one (accuracy, macro F1, per-class
precision and recall, a confusion matrix).

No TensorFlow here, and nothing heavy at import time: scikit-learn and matplotlib are
imported inside the functions that need them (plots use matplotlib's Figure with the Agg
canvas directly, never pyplot's global state, so they are safe in any process).
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

import numpy as np

from patchwork_cli.store.config import MULTICLASS, MULTILABEL
from patchwork_cli.store.splits import Parts
from patchwork_cli.util.atomic import atomic_write

PARTS = ("validation", "train")
PART_TITLES = {"validation": "validation", "train": "training"}
METRICS = ("roc_auc", "average_precision", "accuracy", "precision", "recall", "f1")
NO_LABELS_HINT = {
    "validation": "no validation labels: mark some labelled images as validation "
    "to measure the model on images it did not learn from",
    "train": "no training labels: label some images that are not validation or excluded",
}
HISTOGRAM_BINS = 20

# Colours of the histograms: colour-blind safe (Okabe-Ito) orange and blue, light grey behind.
POSITIVE_COLOUR = "#D55E00"
NEGATIVE_COLOUR = "#0072B2"
UNLABELLED_COLOUR = "#C8C8C8"


# --- metrics ---------------------------------------------------------------------------


def compute_metrics(
    probabilities, labels, validation, exclude, classes: list[str], threshold: float = 0.5, task: str = MULTILABEL
) -> dict:
    """Metrics per class and macro-averaged, on validation and on training cells.

    Shaped for a DVC metrics file: {"validation": {"macro": {...}, "classes": {name: {...}}},
    "train": {...}}, with plain floats/ints. A metric that is undefined for a class (ROC AUC
    without both label values, AP/recall/F1 without positives, anything without labelled
    cells) is None; the macro value is the mean over the classes where it is defined (None
    if there are none). Predictions are positive when probability >= threshold.
    A multiclass `task` adds each part's "multiclass" block (see multiclass_metrics).
    """
    probabilities, labels, validation, exclude = _check_inputs(probabilities, labels, validation, exclude, classes)
    result = {}
    for part, rows in _part_rows(validation, exclude).items():
        per_class = {}
        for k, name in enumerate(classes):
            y_true, y_score = _cells(probabilities[:, k], labels[:, k], rows)
            per_class[str(name)] = _class_metrics(y_true, y_score, threshold)
        result[part] = {"macro": _macro(per_class), "classes": per_class}
        if task == MULTICLASS:
            result[part]["multiclass"] = multiclass_metrics(probabilities, labels, rows, classes)
    return result


def multiclass_metrics(probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray, classes: list[str]) -> dict:
    """The top class against the true one, on the `rows` with exactly one positive and a prediction
    (rows of only 0s say what an image is not, so they have no true class to compare with).

    {"rows", "accuracy", "macro_f1", "classes": {name: {"precision", "recall", "f1", "rows"}},
    "confusion": {"classes", "matrix"}}: matrix[i][j] counts rows of true class i predicted as j.
    Precision is 0 for a class never predicted; recall and F1 are None for a class without
    rows, and macro F1 is the mean over the classes with rows (None without any).
    """
    positives = labels == 1
    keep = rows & (positives.sum(axis=1) == 1) & np.isfinite(probabilities).all(axis=1)
    true, predicted = positives[keep].argmax(axis=1), probabilities[keep].argmax(axis=1)
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(matrix, (true, predicted), 1)
    per_class = {}
    for k, name in enumerate(classes):
        hits, support, claimed = int(matrix[k, k]), int(matrix[k].sum()), int(matrix[:, k].sum())
        precision = hits / claimed if claimed else 0.0
        recall = hits / support if support else None
        f1 = None if recall is None else (2 * precision * recall / (precision + recall) if hits else 0.0)
        per_class[str(name)] = {"precision": precision, "recall": recall, "f1": f1, "rows": support}
    f1s = [c["f1"] for c in per_class.values() if c["f1"] is not None]
    return {
        "rows": int(keep.sum()),
        "accuracy": float(np.trace(matrix) / keep.sum()) if keep.any() else None,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "classes": per_class,
        "confusion": {"classes": [str(name) for name in classes], "matrix": matrix.tolist()},
    }


def prediction_agreement(current: np.ndarray, previous: np.ndarray, task: str) -> float | None:
    """Cohen's kappa between two runs' predicted classes on the same rows (NaN rows left out):
    the "stabilizing predictions" stopping rule (Bloodgood & Vijay-Shanker 2009) compares
    consecutive models on unlabelled data. Multiclass: the top class; multilabel: each class's
    p > 0.5, kappa averaged over the classes. None with fewer than two rows to compare."""
    from sklearn.metrics import cohen_kappa_score

    both = ~np.isnan(current).any(axis=1) & ~np.isnan(previous).any(axis=1)
    if both.sum() < 2:
        return None
    current, previous = current[both], previous[both]
    if task == MULTICLASS:
        pairs = [(current.argmax(axis=1), previous.argmax(axis=1))]
    else:
        pairs = [(current[:, k] > 0.5, previous[:, k] > 0.5) for k in range(current.shape[1])]
    # kappa is undefined when both runs predict one class everywhere: identical answers agree fully
    kappas = [1.0 if (a == b).all() else float(cohen_kappa_score(a, b)) for a, b in pairs]
    return float(np.mean(kappas))


def has_labels(metrics: dict, part: str) -> bool:
    """Whether any class had labelled cells in `part` ("validation" or "train")."""
    classes = metrics.get(part, {}).get("classes", {})
    return any((c.get("positives") or 0) + (c.get("negatives") or 0) > 0 for c in classes.values())


def _check_inputs(probabilities, labels, validation, exclude, classes):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    validation = np.asarray(validation, dtype=bool)
    exclude = np.asarray(exclude, dtype=bool)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape:
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be (N, C)")
    if probabilities.shape[1] != len(classes):
        raise ValueError(f"{probabilities.shape[1]} probability columns for {len(classes)} classes")
    if validation.shape != (len(labels),) or exclude.shape != (len(labels),):
        raise ValueError(f"validation {validation.shape} and exclude {exclude.shape} must be ({len(labels)},)")
    return probabilities, labels, validation, exclude


def _part_rows(validation: np.ndarray, exclude: np.ndarray) -> dict[str, np.ndarray]:
    parts = Parts.from_flags(validation, exclude)
    return {"validation": parts.validation, "train": parts.train}


def _cells(scores: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 labels, probabilities) of the labelled cells of `rows` that have a prediction."""
    keep = rows & ~np.isnan(labels) & np.isfinite(scores)
    return (labels[keep] > 0.5).astype(np.int64), scores[keep]


def _class_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict:
    positives, negatives = int(y_true.sum()), int(len(y_true) - y_true.sum())
    out = dict.fromkeys(METRICS)
    out.update(positives=positives, negatives=negatives)
    if not len(y_true):
        return out
    from sklearn import metrics as skm

    y_pred = (y_score >= threshold).astype(np.int64)
    out["accuracy"] = skm.accuracy_score(y_true, y_pred)
    # Precision is defined as 0 when nothing is predicted positive (the brief's convention).
    out["precision"] = skm.precision_score(y_true, y_pred, zero_division=0)
    if positives:
        out["average_precision"] = skm.average_precision_score(y_true, y_score)
        out["recall"] = skm.recall_score(y_true, y_pred)
        out["f1"] = skm.f1_score(y_true, y_pred, zero_division=0)
        if negatives:
            out["roc_auc"] = skm.roc_auc_score(y_true, y_score)
    return {key: _plain(value) for key, value in out.items()}


def _macro(per_class: dict) -> dict:
    macro = {}
    for key in METRICS:
        values = [c[key] for c in per_class.values() if c[key] is not None]
        macro[key] = float(np.mean(values)) if values else None
    return macro


def _plain(value):
    """A JSON/YAML-friendly number: int stays int, finite floats become float, NaN becomes None."""
    if value is None or isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


# --- text tables -----------------------------------------------------------------------


def format_metrics_table(metrics: dict, threshold: float = 0.5) -> str:
    """Per class and macro: ROC AUC, average precision, F1 and label counts, validation beside training.

    A part without labels is left out of the table and named in a line saying what to do.
    """
    parts = [part for part in PARTS if has_labels(metrics, part)]
    notes = [NO_LABELS_HINT[part] for part in PARTS if part not in parts]
    if not parts:
        return "\n".join(notes)
    names = list(metrics[parts[0]]["classes"])
    name_width = max(len("class"), len("macro"), *(len(n) for n in names))
    columns = (
        ("AUC", "roc_auc", 5),
        ("AP", "average_precision", 5),
        ("F1", "f1", 5),
        ("pos", "positives", 5),
        ("neg", "negatives", 5),
    )
    group_width = sum(w for _, _, w in columns) + 2 * (len(columns) - 1)
    gap = "   "

    header = [" " * name_width + "".join(gap + PART_TITLES[p].ljust(group_width) for p in parts)]
    header.append(" " * name_width + "".join(gap + "-" * group_width for _ in parts))
    header.append(
        "class".ljust(name_width) + "".join(gap + "  ".join(title.rjust(w) for title, _, w in columns) for _ in parts)
    )

    def row(label: str, values_for) -> str:
        cells = []
        for part in parts:
            values = values_for(part)
            cells.append(gap + "  ".join(_cell(values.get(key), w) for _, key, w in columns))
        return label.ljust(name_width) + "".join(cells)

    lines = [*notes, *([""] if notes else []), *(line.rstrip() for line in header)]
    for name in names:
        lines.append(row(name, lambda part, name=name: metrics[part]["classes"][name]))
    lines.append(row("macro", lambda part: _macro_with_counts(metrics[part])))
    lines.append("")
    lines.append(f"AUC: ROC AUC; AP: average precision; F1 at threshold {threshold:g}; pos/neg: labelled images.")
    lines.append("-: undefined (AUC needs positive and negative labels; AP and F1 need positives).")
    if "multiclass" in metrics[parts[0]]:
        lines += ["", *_multiclass_lines(metrics, parts)]
    agreement = metrics.get("agreement")
    if agreement:
        lines += [
            "",
            f"agreement with run {agreement['previous_run']} on {agreement['rows']} unlabelled images: "
            f"Cohen's kappa {agreement['kappa']:.3f} (runs that stop changing their predictions suggest stopping)",
        ]
    return "\n".join(lines)


def _multiclass_lines(metrics: dict, parts: list[str]) -> list[str]:
    """The classifier view of a multiclass run: a headline per part, then validation's (else
    training's) per-class precision and recall and its confusion matrix."""
    lines = []
    for part in parts:
        block = metrics[part]["multiclass"]
        lines.append(
            f"{PART_TITLES[part]} as a classifier (top class, {block['rows']} rows with one positive): "
            f"accuracy {_cell(block['accuracy'], 0).strip()}, macro F1 {_cell(block['macro_f1'], 0).strip()}"
        )
    part = parts[0]
    block = metrics[part]["multiclass"]
    if not block["rows"]:
        return lines
    names = block["confusion"]["classes"]
    width = max(len("class"), *(len(name) for name in names))
    lines += ["", f"per class on {PART_TITLES[part]} rows (top class)"]
    lines.append(f"{'class'.ljust(width)}  precision  recall     F1   rows")
    for name, values in block["classes"].items():
        cells = (_cell(values["precision"], 9), _cell(values["recall"], 6), _cell(values["f1"], 6))
        lines.append(f"{name.ljust(width)}  {'  '.join(cells)}  {values['rows']:>5}")
    matrix = block["confusion"]["matrix"]
    column = max(3, *(len(name) for name in names), *(len(str(n)) for row in matrix for n in row))
    lines += ["", f"confusion on {PART_TITLES[part]} rows (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join("  " + name.rjust(column) for name in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(name.ljust(width) + "".join("  " + str(n).rjust(column) for n in row))
    return lines


def _macro_with_counts(part_metrics: dict) -> dict:
    classes = part_metrics["classes"].values()
    return {
        **part_metrics["macro"],
        "positives": sum(c["positives"] for c in classes),
        "negatives": sum(c["negatives"] for c in classes),
    }


def _cell(value, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = f"{value:.3f}"
    return text.rjust(width)


def runs_table(runs: list[dict]) -> str:
    """One line per run: id, number of labels, validation macro AUC and AP, training macro AUC,
    and the kappa of its predictions on unlabelled images against the run before it."""
    if not runs:
        return "no runs yet: run 'patchwork train' first"
    columns = (
        ("run", "run_id"),
        ("labels", "labels"),
        ("val AUC", "val_macro_auc"),
        ("val AP", "val_macro_ap"),
        ("train AUC", "train_macro_auc"),
        ("kappa vs previous", "kappa"),
    )
    rows = [[_run_cell(run.get(key)) for _, key in columns] for run in runs]
    widths = [max(len(title), *(len(r[i]) for r in rows)) for i, (title, _) in enumerate(columns)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    return "\n".join([line([title for title, _ in columns]), *(line(r) for r in rows)])


def _run_cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# --- plots -----------------------------------------------------------------------------


def plot_class_histograms(probabilities, labels, validation, exclude, classes, out_dir: Path) -> list[Path]:
    """One PNG per class, hist_<class>.png: predicted probability of positives and negatives,
    training and validation side by side, over the unlabelled images' distribution in grey."""
    probabilities, labels, validation, exclude = _check_inputs(probabilities, labels, validation, exclude, classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = _part_rows(validation, exclude)
    paths = []
    for k, (name, stem) in enumerate(zip(classes, safe_file_stems(classes), strict=True)):
        scores, column = probabilities[:, k], labels[:, k]
        unlabelled = scores[~exclude & np.isnan(column) & np.isfinite(scores)]
        figure = _histogram_figure(str(name), scores, column, parts, unlabelled)
        paths.append(_save(figure, out_dir / f"hist_{stem}.png"))
    return paths


def safe_file_stems(names) -> list[str]:
    """File-name-safe, distinct (also ignoring case) stems for `names`: 'cat/dog' -> 'cat_dog'."""
    stems, taken = [], set()
    for name in names:
        ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()  # ü -> u
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._-") or "class"
        candidate, n = stem[:100], 2
        while candidate.lower() in taken:
            candidate, n = f"{stem[:100]}_{n}", n + 1
        taken.add(candidate.lower())
        stems.append(candidate)
    return stems


def _histogram_figure(name, scores, column, parts, unlabelled):
    from matplotlib.figure import Figure

    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    figure = Figure(figsize=(11, 4.4), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    counts, tallest = [], 0.0
    for ax, part in zip(axes, ("train", "validation"), strict=True):
        y_true, y_score = _cells(scores, column, parts[part])
        positives, negatives = y_score[y_true == 1], y_score[y_true == 0]
        counts.append(
            f"{PART_TITLES[part]} {len(positives)}+ / {len(negatives)}\u2212"
            if len(y_true)
            else f"no {PART_TITLES[part]} labels"
        )
        if len(unlabelled):
            heights, _, _ = ax.hist(
                np.clip(unlabelled, 0, 1),
                bins=bins,
                density=True,
                color=UNLABELLED_COLOUR,
                label=f"unlabelled ({len(unlabelled)})",
                zorder=1,
            )
            tallest = max(tallest, heights.max())
        for values, colour, word in (
            (negatives, NEGATIVE_COLOUR, "negative"),
            (positives, POSITIVE_COLOUR, "positive"),
        ):
            if len(values):
                clipped = np.clip(values, 0, 1)
                ax.hist(clipped, bins=bins, density=True, histtype="stepfilled", color=colour, alpha=0.15, zorder=2)
                heights, _, _ = ax.hist(
                    clipped,
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=colour,
                    linewidth=2,
                    label=f"{word} ({len(values)})",
                    zorder=3,
                )
                tallest = max(tallest, heights.max())
        ax.set_title(_panel_title(part, y_true, y_score), fontsize=11)
        ax.set_xlim(0, 1)
        ax.set_xlabel("predicted probability")
        ax.grid(axis="y", color="#EEEEEE", zorder=0)
        ax.set_axisbelow(True)
        if not len(y_true):
            _empty_panel_note(ax, f"no {PART_TITLES[part]} labels", fontsize=12)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(
                loc="upper center",
                fontsize=8.5,
                framealpha=0.9,
                ncols=3,
                handlelength=1.4,
                columnspacing=1.0,
                handletextpad=0.5,
                borderaxespad=0.3,
            )
    # Headroom above the tallest bar so the legend (one row, at the top) never hides a bar.
    axes[0].set_ylim(0, tallest * 1.22 if tallest > 0 else 1)
    axes[0].set_ylabel("density (each group's area is 1)")
    figure.suptitle(f"{name}: predicted probability  ({', '.join(counts)}, {len(unlabelled)} unlabelled)", fontsize=13)
    return figure


def _panel_title(part: str, y_true: np.ndarray, y_score: np.ndarray) -> str:
    title = PART_TITLES[part]
    if len(y_true) and 0 < y_true.sum() < len(y_true):
        from sklearn.metrics import roc_auc_score

        title += f"  (ROC AUC {roc_auc_score(y_true, y_score):.3f})"
    return title


def plot_learning_curve(runs: list[dict], out_path: Path) -> Path:
    """Validation macro ROC AUC (y) against the number of labels (x), one point per run in run
    order; training macro AUC faintly behind. Runs without a validation AUC are skipped."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    ax = figure.subplots()
    counted = [r for r in runs if _finite(r.get("labels"))]
    scored = [r for r in counted if _finite(r.get("val_macro_auc"))]
    trained = [r for r in counted if _finite(r.get("train_macro_auc"))]
    if trained:
        ax.plot(
            [r["labels"] for r in trained],
            [r["train_macro_auc"] for r in trained],
            linestyle="--",
            marker=".",
            color="#AAAAAA",
            label="training macro ROC AUC",
            zorder=2,
        )
    if scored:
        x, y = [r["labels"] for r in scored], [r["val_macro_auc"] for r in scored]
        ax.plot(x, y, marker="o", color=NEGATIVE_COLOUR, linewidth=2, label="validation macro ROC AUC", zorder=3)
        for r, (dx, dy, ha, va) in zip(scored, _label_offsets(scored), strict=True):
            ax.annotate(
                f"{r['val_macro_auc']:.3f}",
                (r["labels"], r["val_macro_auc"]),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=8,
                color="#555555",
                zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
            )
    else:
        ax.text(
            0.5,
            0.5,
            "no run has a validation ROC AUC yet:\nmark some labelled images as validation",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            color="#555555",
        )
    values = [r["val_macro_auc"] for r in scored] + [r["train_macro_auc"] for r in trained]
    low = min(values, default=0.5)
    ax.set_ylim(0.5 if low >= 0.5 else max(0.0, low - 0.05), 1.04)
    ax.axhline(0.5, color="#999999", linestyle=":", linewidth=1, zorder=1)
    # From zero labels: the curve shows how far labelling has come; whole numbers of labels only.
    most = max((r["labels"] for r in scored + trained), default=0)
    ax.set_xlim(0, max(most * 1.06, most + 2, 10))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labelled images in the run")
    ax.set_ylabel("macro ROC AUC")
    latest = f", latest {runs[-1]['run_id']}" if runs and runs[-1].get("run_id") else ""
    title = f"{len(scored)} of {len(runs)} run(s) with a validation AUC{latest}" if runs else "no runs yet"
    ax.set_title(f"learning curve: {title}", fontsize=11)
    ax.grid(color="#EEEEEE")
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=9)
    return _save(figure, out_path)


def plot_confusion(block: dict, part: str, out_path: Path) -> Path:
    """The confusion matrix of a multiclass_metrics `block`: counts in the cells, shaded by the share
    of their true class (a row's shades sum to 1), so a rare class's errors show as clearly as a
    common one's."""
    from matplotlib.figure import Figure

    names = block["confusion"]["classes"]
    matrix = np.asarray(block["confusion"]["matrix"], np.float64)
    size = max(4.8, 0.6 * len(names) + 2.8)
    figure = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
    ax = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > 0.6 else "black" if count else "#AAAAAA"  # zeros recede
        ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=10, color=colour)
    ticks = range(len(names))
    slanted = max(map(len, names)) > 3  # long names would run into each other under the columns
    ax.set_xticks(ticks, names, rotation=45 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(ticks, [f"{name} ({int(total)})" for name, total in zip(names, totals[:, 0], strict=True)])
    ax.set_xlabel("predicted class (the top probability)")
    ax.set_ylabel("true class (its rows)")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's rows")
    scored = f": {block['rows']} rows, accuracy {block['accuracy']:.3f}" if block["rows"] else ""
    ax.set_title(f"confusion on {PART_TITLES[part]}{scored}", fontsize=11)
    if not block["rows"]:
        _empty_panel_note(ax, f"no {PART_TITLES[part]} rows with exactly one positive label", fontsize=11)
    return _save(figure, Path(out_path))


def _empty_panel_note(ax, text: str, fontsize: float) -> None:
    """A boxed grey note in the middle of a panel that has nothing to draw."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=fontsize,
        color="#555555",
        zorder=4,
        bbox={"facecolor": "white", "edgecolor": "#BBBBBB", "boxstyle": "round,pad=0.4"},
    )


def _label_offsets(scored: list[dict]) -> list[tuple]:
    """Where each point's value label goes: above; runs sharing a label count share an x, so
    there the highest is labelled above, the lowest below and any between them to the right."""
    groups: dict = {}
    for i, r in enumerate(scored):
        groups.setdefault(r["labels"], []).append(i)
    offsets = [(0, 8, "center", "bottom")] * len(scored)
    for members in groups.values():
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda i: scored[i]["val_macro_auc"])
        for i in ordered[1:-1]:
            offsets[i] = (8, 0, "left", "center")
        offsets[ordered[0]] = (0, -8, "center", "top")
    return offsets


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def _save(figure, path: Path) -> Path:
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return path
