"""The scripted oracle: stands in for the person in the examples by answering from the true labels.

    python examples/oracle.py QUEUE.txt TRUTH.csv [--validation-every K] > answers.csv

QUEUE.txt holds image paths, one per line, as `patchwork sample` prints them. TRUTH.csv has
a filepath column and one 0/1 column per class. Images are matched by file name, so the
queue may name copies of the truth's images anywhere. The output is a `patchwork label
--import` CSV for the queued images (paths as given); with --validation-every K every K-th
answer is also marked for validation, the way a person sets some labels aside.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("--validation-every", type=int, default=0)
    args = parser.parse_args()
    with args.truth.open(newline="") as handle:
        truth = {Path(row["filepath"]).name: row for row in csv.DictReader(handle)}
    classes = [name for name in next(iter(truth.values())) if name != "filepath"]
    queue = [line.strip() for line in args.queue.read_text().splitlines() if line.strip()]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["filepath", *classes, "validation"])
    for number, path in enumerate(queue, start=1):
        answer = truth[Path(path).name]
        validation = bool(args.validation_every) and number % args.validation_every == 0
        writer.writerow([path, *(answer[name] for name in classes), str(validation).lower()])


if __name__ == "__main__":
    main()
