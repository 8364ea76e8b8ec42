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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from patchwork_cli.errors import PatchworkError
from patchwork_cli.sampling.filters import DEFAULT_FILTERS, FILTERS, check_filters, filter_mask
from patchwork_cli.sampling.label_errors import describe
from patchwork_cli.sampling.registry import STRATEGIES, reading
from patchwork_cli.sampling.strategies import Pool, Strategy, auto_strategy, choose, parse_strategy
from patchwork_cli.store import runs
from patchwork_cli.store.duplicate_groups import read_groups
from patchwork_cli.store.label_schema import FILEPATH
from patchwork_cli.store.splits import Parts

if TYPE_CHECKING:
    from patchwork_cli.store.project import Project

__all__ = ["FILTERS", "STRATEGIES", "sample"]

log = logging.getLogger("patchwork")
COLUMNS = ("row", "filepath", "score", "rank", "strategy")


def sample(
    project: Project,
    n: int,
    *,
    strategy: str | None = None,
    filters: Sequence[str] = (),
    seed: int | None = None,
    run_id: str | None = None,
) -> pd.DataFrame:
    """Up to `n` rows chosen by filter -> score -> select, in rank order.

    Columns: row (index in labels.csv), filepath (as stored in labels.csv), score (float,
    the strategy's measure: entropy, margin, draw weight, distance, typicality, coverage gain,
    |p - label|, or the uniform key for random), rank (1..k), strategy (the one used: what
    `auto` stood for). `strategy` None takes patchwork.yaml's sampling.strategy; empty
    `filters` means unlabeled (all, for disagree: it ranks labelled rows). Rows the run has no
    predictions for (or, for the coverage strategies, no features) are left out, with a warning.
    """
    if n < 1:
        raise PatchworkError(f"n must be at least 1, got {n}")
    chosen = _parse(project, strategy)
    filters = list(filters) or (["all"] if chosen.form == "disagree" else list(DEFAULT_FILTERS))
    check_filters(filters, project.classes)  # bad input fails before any reading
    if chosen.form == "auto" or chosen.needs_model or chosen.needs_features:
        # zarr takes a quarter of a second to import: let that overlap the label table's
        # parse (Arrow releases the GIL); read_run_array's own import then finds it done.
        threading.Thread(target=importlib.import_module, args=("zarr",), daemon=True).start()
    table = project.labels()
    if chosen.form == "auto":
        chosen = _resolve_auto(project, table, run_id)
    run = _run_for(project, chosen, run_id)
    candidates = np.flatnonzero(filter_mask(table, project.classes, filters))
    if chosen.form != "disagree":  # disagree ranks labelled rows: copies of them are its business
        candidates = _one_per_group(project, table, candidates)
    if run:
        pool, candidates = _pool(table, chosen, candidates, run, project)
    elif chosen.needs_features:
        pool, candidates = _feature_pool(table, candidates, project)
    else:
        pool = Pool(len(candidates))
    picks, picked_scores = choose(chosen, pool, n, np.random.default_rng(seed))
    rows = candidates[picks]
    chosen_rows = pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "filepath": table[FILEPATH].take(rows).to_numpy(object),
            "score": np.asarray(picked_scores, dtype=np.float64),
            "rank": np.arange(1, len(rows) + 1, dtype=np.int64),
            "strategy": chosen.name,
        },
        columns=list(COLUMNS),
    )
    if chosen.form == "disagree":  # each label as given, and as the out-of-sample model has it
        chosen_rows["given"], chosen_rows["suggested"] = describe(pool.p[picks], pool.labels[picks], pool.task, run[1])
    return chosen_rows


def _one_per_group(project: Project, table: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """The candidates without copies (duplicates.csv, from `patchwork duplicates`): none of a group
    that holds a labelled image (its label covers them all), one of each other group (the first in
    labels.csv), so that a batch never shows the same image twice."""
    groups = read_groups(project.directory, table[FILEPATH])
    if groups is None:
        return candidates
    labelled = ~np.isnan(table[project.classes].to_numpy(np.float64)).all(axis=1)
    covered = groups.with_any(labelled)[candidates]
    grouped = groups.grouped[candidates] & ~covered
    _, first = np.unique(groups.group_of_row[candidates[grouped]], return_index=True)
    repeat = np.zeros(len(candidates), bool)
    repeat[np.flatnonzero(grouped)] = True
    repeat[np.flatnonzero(grouped)[first]] = False
    if covered.any() or repeat.any():
        log.warning(
            "left out %d copy(ies) (duplicates.csv): %d of a group holding a labelled image, %d of a group already in",
            int(covered.sum() + repeat.sum()),
            int(covered.sum()),
            int(repeat.sum()),
        )
    return candidates[~covered & ~repeat]


def _resolve_auto(project: Project, table: pd.DataFrame, run_id: str | None) -> Strategy:
    """What `auto` stands for now (strategies.auto_strategy): coverage until the model has a few
    positive training labels of every class, then diverse uncertainty; random before any
    extract (coverage is of the features)."""
    if project.open_features() is None:
        return Strategy("random")
    positives = (table[project.classes].to_numpy(np.float64)[_training_rows(table)] == 1).sum(axis=0)
    has_run = run_id is not None or runs.latest_run(project.directory) is not None
    return Strategy(auto_strategy(project.config.task, positives.tolist(), has_run))


def _parse(project: Project, strategy: str | None) -> Strategy:
    if strategy is not None:
        return parse_strategy(strategy, project.classes)
    try:
        return parse_strategy(project.config.sampling.strategy, project.classes)
    except PatchworkError as error:
        raise PatchworkError(f"{project.config_path}: sampling.strategy: {error}") from None


def _run_for(project: Project, strategy: Strategy, run_id: str | None) -> tuple[Path, list[str]] | None:
    """The run directory and its classes, when the strategy needs a model."""
    if not strategy.needs_model:
        return None
    if run_id is None and runs.latest_run(project.directory) is None:
        raise PatchworkError(
            f"no trained model yet: strategy {strategy.name!r} ranks images by a model's predictions; "
            "run 'patchwork train' first (or use --strategy random)"
        )
    run_dir = runs.resolve_run(project.directory, run_id)
    run_classes = runs.RunRecord.read(run_dir).classes
    if strategy.target is not None and strategy.target not in run_classes:
        raise PatchworkError(
            f"class {strategy.target!r} is not in run {run_dir.name} (trained on: {', '.join(run_classes)}); "
            "run 'patchwork train' again"
        )
    return run_dir, run_classes


def _pool(
    table: pd.DataFrame, strategy: Strategy, candidates: np.ndarray, run: tuple[Path, list[str]], project: Project
) -> tuple[Pool, np.ndarray]:
    """The candidates' arrays for `strategy`, and the candidates that have them (rows the
    run never predicted, added since or without features, are dropped with a warning)."""
    run_dir, run_classes = run
    # by filepath: a labels.csv sorted or edited by hand never scores an image by another's prediction
    match = runs.run_match(run_dir, table[FILEPATH], project.directory)
    p = runs.read_run_array(run_dir, runs.PREDICTIONS_NAME, match)
    usable = ~np.isnan(p).any(axis=1)  # a row's embedding is written with its prediction
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
        task=project.config.task,
    )
    if strategy.form == "disagree" or strategy.needs_embeddings:
        # The labels of the classes the run knows, in its column order (NaN for one renamed since).
        labels = table.reindex(columns=run_classes).to_numpy(np.float64)
        pool.labels = labels[candidates]
    if strategy.form == "disagree":
        learnt = _training_rows(table)[candidates] & ~np.isnan(pool.labels).all(axis=1)
        pool.p = _out_of_sample(pool.p, table[FILEPATH].take(candidates), learnt, run_dir)
    if strategy.needs_embeddings:
        # What the model has already learnt from: badge and coreset start with them as centres.
        seen = np.flatnonzero(_learnt_from(table, labels, usable, candidates))
        h = runs.read_run_rows(run_dir, runs.EMBEDDINGS_NAME, match, np.concatenate([candidates, seen]))
        pool.h, pool.seen_h, pool.seen_p = h[: len(candidates)], h[len(candidates) :], p[seen]
    return pool, candidates


def _out_of_sample(p: np.ndarray, filepaths: pd.Series, learnt: np.ndarray, run_dir: Path) -> np.ndarray:
    """The candidates' probabilities with every row labelled when the run was trained given its
    out-of-fold prediction (training/out_of_fold.py): the run's own predictions of its training
    rows echo their labels, right or wrong. A run without them is used as it is, with a warning
    when some candidate is a labelled training row (`learnt`)."""
    folds = runs.read_out_of_fold(run_dir)
    if folds is None and learnt.any():
        log.warning(
            "run %s has no out-of-fold predictions (trained before runs kept them, or with "
            "training.label_folds 0): its training rows are ranked by the predictions it learnt them "
            "with, which hide most wrong labels; train again to rank them properly",
            run_dir.name,
        )
    if folds is None:
        return p
    if not folds:
        return p
    # by hashing: disagree's candidates are every row by default, a million of them at scale
    position = pd.Index(list(folds)).get_indexer(filepaths)
    held_out = position >= 0
    p = p.copy()
    p[held_out] = np.stack(list(folds.values()))[position[held_out]]
    return p


def _feature_pool(table: pd.DataFrame, candidates: np.ndarray, project: Project) -> tuple[Pool, np.ndarray]:
    """The candidates' reduced features (the store's reduced copy: unit pooled rows on its principal
    axes) for the coverage strategies, with those of the labelled rows (already covered), matched to
    labels.csv by filepath; candidates without features are dropped with a warning."""
    from patchwork_cli.store.features import DONE

    store = project.open_features()
    if store is None:
        raise PatchworkError(
            f"features not extracted yet: the coverage strategies ({', '.join(reading('features'))}) work on "
            "the extracted features; run 'patchwork extract' first (or use --strategy random)"
        )
    match = store.match(table[FILEPATH], project.directory)
    has_features = store.table_status(match) == DONE
    skipped = int((~has_features[candidates]).sum())
    if skipped:
        log.warning("%d candidate row(s) have no features yet (patchwork extract); left out", skipped)
    candidates = candidates[has_features[candidates]]
    seen = _learnt_from(table, table[project.classes].to_numpy(np.float64), has_features, candidates)
    source = match.store_rows_of_table()
    vectors = store.reduced_rows(source[np.concatenate([candidates, np.flatnonzero(seen)])])
    pool = Pool(
        count=len(candidates),
        features=vectors[: len(candidates)],
        seen_features=vectors[len(candidates) :],
        task=project.config.task,
        class_count=len(project.classes),
    )
    return pool, candidates


def _learnt_from(table: pd.DataFrame, labels: np.ndarray, usable: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The usable labelled training rows that are not candidates (`labels`: (N, C), NaN for
    unlabelled): already covered, or already learnt from."""
    seen = usable & ~np.isnan(labels).all(axis=1) & _training_rows(table)
    seen[candidates] = False
    return seen


def _training_rows(table: pd.DataFrame) -> np.ndarray:
    """Rows a model learns from when labelled: not excluded, not held out for validation (a
    validation label covers nothing: the model never sees it)."""
    return Parts.of(table).train
