"""The diagnostic plots of a run: per-class probability histograms, the learning curve over
runs, and a multiclass run's confusion matrix, each written atomically as a PNG.

matplotlib is imported inside the functions that draw, and they use its Figure with the Agg
canvas directly, never pyplot's global state, so they are safe in any process. No TensorFlow.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

import numpy as np

from patchwork_cli.evaluation.metrics import PART_TITLES, check_inputs, labelled_cells, part_rows
from patchwork_cli.store.run_metrics import Classifier
from patchwork_cli.util.atomic import atomic_write

HISTOGRAM_BINS = 20

# Colours of the histograms: colour-blind safe (Okabe-Ito) orange and blue, light grey behind.
POSITIVE_COLOUR = "#D55E00"
NEGATIVE_COLOUR = "#0072B2"
UNLABELLED_COLOUR = "#C8C8C8"


def plot_class_histograms(probabilities, labels, validation, exclude, classes, out_dir: Path) -> list[Path]:
    """One PNG per class, hist_<class>.png: predicted probability of positives and negatives,
    training and validation side by side, over the unlabelled images' distribution in grey."""
    probabilities, labels, validation, exclude = check_inputs(probabilities, labels, validation, exclude, classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = part_rows(validation, exclude)
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
        y_true, y_score = labelled_cells(scores, column, parts[part])
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


def plot_confusion(block: Classifier, part: str, out_path: Path) -> Path:
    """The confusion matrix of a part's classifier view (a multiclass run's): counts in the cells,
    shaded by the share of their true class (a row's shades sum to 1), so a rare class's errors
    show as clearly as a common one's."""
    from matplotlib.figure import Figure

    names = block.confusion.classes
    matrix = np.asarray(block.confusion.matrix, np.float64)
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
    scored = f": {block.rows} rows, accuracy {block.accuracy:.3f}" if block.rows else ""
    ax.set_title(f"confusion on {PART_TITLES[part]}{scored}", fontsize=11)
    if not block.rows:
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
