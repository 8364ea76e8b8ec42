"""Sampling: which images a person should look at next. Filter, then score, then select.

`sample` reads the label table and, for the strategies that need a model, the latest
run's predictions and embeddings; everything after that is pure numpy (filters.py,
scores.py, selection.py, strategies.py). No TensorFlow here: sampling starts fast.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs
from ..errors import PatchworkError
from .filters import DEFAULT_FILTERS, FILTERS, check_filters, filter_mask
from .strategies import STRATEGIES, Pool, Strategy, choose, parse_strategy

__all__ = ["FILTERS", "STRATEGIES", "sample"]

log = logging.getLogger("patchwork")
COLUMNS = ("row", "filepath", "score", "rank")


def sample(
    project,
    n: int,
    strategy: str | None = None,
    filters: Sequence[str] = (),
    seed: int | None = None,
    run_id: str | None = None,
) -> pd.DataFrame:
    """Up to `n` rows chosen by filter -> score -> select, in rank order.

    Columns: row (index in labels.csv), filepath (as stored in labels.csv), score (float,
    the strategy's measure: entropy, draw weight, distance, |p - label|, or the uniform
    key for random), rank (1..k). `strategy` None takes patchwork.yaml's sampling.strategy;
    empty `filters` means unlabeled (all, for disagree: it ranks labelled rows). Rows the
    run has no predictions for are left out, with a warning.
    """
    if n < 1:
        raise PatchworkError(f"n must be at least 1, got {n}")
    chosen = _parse(project, strategy)
    filters = list(filters) or (["all"] if chosen.form == "disagree" else list(DEFAULT_FILTERS))
    check_filters(filters, project.classes)  # bad input fails before any reading
    run = _run_for(project, chosen, run_id)
    if run:
        # zarr takes a quarter of a second to import: let that overlap the label table's
        # parse (Arrow releases the GIL); read_run_array's own import then finds it done.
        threading.Thread(target=importlib.import_module, args=("zarr",), daemon=True).start()
    table = project.labels()
    candidates = np.flatnonzero(filter_mask(table, project.classes, filters))
    pool, candidates = (
        _pool(table, chosen, candidates, run, project.directory) if run else (Pool(len(candidates)), candidates)
    )
    picks, picked_scores = choose(chosen, pool, n, np.random.default_rng(seed))
    rows = candidates[picks]
    return pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "filepath": table["filepath"].to_numpy()[rows],
            "score": np.asarray(picked_scores, dtype=np.float64),
            "rank": np.arange(1, len(rows) + 1, dtype=np.int64),
        },
        columns=list(COLUMNS),
    )


def _parse(project, strategy: str | None) -> Strategy:
    if strategy is not None:
        return parse_strategy(strategy, project.classes)
    try:
        return parse_strategy(project.config.sampling.strategy, project.classes)
    except PatchworkError as error:
        raise PatchworkError(f"{project.config_path}: sampling.strategy: {error}") from None


def _run_for(project, strategy: Strategy, run_id: str | None) -> tuple[Path, list[str]] | None:
    """The run directory and its classes, when the strategy needs a model."""
    if not strategy.needs_model:
        return None
    if run_id is None and runs.latest_run(project.directory) is None:
        raise PatchworkError(
            f"no trained model yet: strategy {strategy.name!r} ranks images by a model's predictions; "
            "run 'patchwork train' first (or use --strategy random)"
        )
    run_dir = runs.resolve_run(project.directory, run_id)
    run_classes = runs.read_json(run_dir / runs.RUN_FILE)["classes"]
    if strategy.target is not None and strategy.target not in run_classes:
        raise PatchworkError(
            f"class {strategy.target!r} is not in run {run_dir.name} (trained on: {', '.join(run_classes)}); "
            "run 'patchwork train' again"
        )
    return run_dir, run_classes


def _pool(table: pd.DataFrame, strategy: Strategy, candidates: np.ndarray, run: tuple[Path, list[str]], project_dir):
    """The candidates' arrays for `strategy`, and the candidates that have them (rows the
    run never predicted, added since or without features, are dropped with a warning)."""
    run_dir, run_classes = run
    # by filepath: a labels.csv sorted or edited by hand never scores an image by another's prediction
    match = runs.run_match(run_dir, table["filepath"].tolist(), project_dir)
    p = runs.read_run_array(run_dir, runs.PREDICTIONS_NAME, match)
    usable = ~np.isnan(p).any(axis=1)
    h = None
    if strategy.needs_embeddings:
        h = runs.read_run_array(run_dir, runs.EMBEDDINGS_NAME, match)
        usable &= ~np.isnan(h).any(axis=1)
    skipped = int((~usable[candidates]).sum())
    if skipped:
        log.warning(
            "%d candidate row(s) have no predictions in run %s (added since, or no features); left out",
            skipped,
            run_dir.name,
        )
    candidates = candidates[usable[candidates]]
    pool = Pool(
        count=len(candidates),
        p=p[candidates],
        target=run_classes.index(strategy.target) if strategy.target is not None else None,
    )
    if strategy.form == "disagree" or h is not None:
        # The labels of the classes the run knows, in its column order (NaN for one renamed since).
        labels = table.reindex(columns=run_classes).to_numpy(np.float64)
        pool.labels = labels[candidates]
    if h is not None:
        pool.h = h[candidates]
        # The labelled rows outside the candidates are what the model has already learnt
        # from: badge and coreset start with them as centres.
        seen = usable & ~np.isnan(labels).all(axis=1) & ~table["exclude"].to_numpy(dtype=bool)
        seen[candidates] = False
        pool.seen_p, pool.seen_h = p[seen], h[seen]
    return pool, candidates
