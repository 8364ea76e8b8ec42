"""Label efficiency of the sampling strategies, the benchmark behind the quickstart.

    .venv/bin/python benchmarks/active_learning.py [--seeds 3] [--rounds 6] [--batch 20]

One base project (examples/quickstart/make_base.sh: 1,000 real digits, pooled
EfficientNet-Lite0 features, 300 oracle validation labels). For each seed: 20 random seed
labels, then each strategy runs the quickstart's loop (examples/quickstart/loop.sh:
sample -> oracle -> label --import -> train, ROUNDS times) on its own copy, through the
real CLI. For each strategy and seed it finds the number of training labels at which
validation accuracy first reaches what random sampling reaches with its full budget --
the smaller the better; a strategy that never gets there counts as "> budget". Prints one
row per strategy with the median and the range across seeds, then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
sys.path.insert(0, str(QUICKSTART))
from compare import learning_curve, true_classes  # noqa: E402

STRATEGIES = ("random", "maxent", "badge", "coreset")


def shell(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def labels_to_reach(curve: list[dict], target: float) -> int | None:
    return next((point["labels"] for point in curve if point["accuracy"] >= target - 1e-9), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="patchwork-al-"))
    try:
        truth_csv = Path(shell("bash", str(QUICKSTART / "make_base.sh"), str(work)).strip())
        truth = true_classes(truth_csv)
        needed = {name: [] for name in STRATEGIES}
        final = {name: [] for name in STRATEGIES}
        for seed in range(args.seeds):
            seeded = work / f"seed{seed}"
            shutil.copytree(work / "base", seeded)
            queue = shell(
                "patchwork",
                "-C",
                str(seeded),
                "sample",
                "--strategy",
                "random",
                "-n",
                str(args.batch),
                "--seed",
                str(seed),
            )
            (work / "seed.txt").write_text(queue)
            answers = shell(sys.executable, str(REPO / "examples/oracle.py"), str(work / "seed.txt"), str(truth_csv))
            (work / "seed.csv").write_text(answers)
            shell("patchwork", "-C", str(seeded), "label", "--import", str(work / "seed.csv"))
            curves = {}
            for name in STRATEGIES:
                project = work / f"seed{seed}-{name}"
                shutil.copytree(seeded, project)
                shell(
                    "bash",
                    str(QUICKSTART / "loop.sh"),
                    str(project),
                    name,
                    str(args.rounds),
                    str(args.batch),
                    str(truth_csv),
                    str(seed),
                )
                curves[name] = learning_curve(project, truth)
            target = curves["random"][-1]["accuracy"]
            for name, curve in curves.items():
                needed[name].append(labels_to_reach(curve, target))
                final[name].append(curve[-1]["accuracy"])
            print(
                f"seed {seed}: random's final accuracy {target:.3f}; labels to reach it: "
                + ", ".join(f"{name} {needed[name][-1]}" for name in STRATEGIES),
                file=sys.stderr,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    budget = args.batch * (args.rounds + 1)
    print(f"labels to reach random's accuracy at {budget} labels ({args.seeds} seeds; smaller is better)")
    print(f"{'strategy':<10}{'median':>8}{'range':>14}{'final accuracy':>22}")
    summary = {}
    for name in STRATEGIES:
        counts = [budget + args.batch if n is None else n for n in needed[name]]  # not reached: past the budget
        spread = f"{min(counts)}-{max(counts)}" if min(counts) != max(counts) else f"{min(counts)}"
        shown = [str(n) if n is not None else f">{budget}" for n in needed[name]]
        print(
            f"{name:<10}{float(np.median(counts)):>8.0f}{spread:>14}"
            f"{np.mean(final[name]):>14.3f} ± {np.std(final[name]):.3f}   per seed: {', '.join(shown)}"
        )
        summary[name] = {"labels_needed": needed[name], "final_accuracy": final[name]}
    print(json.dumps({"budget": budget, "seeds": args.seeds, "strategies": summary}))


if __name__ == "__main__":
    main()
