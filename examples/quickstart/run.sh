#!/usr/bin/env bash
# The quickstart (`make demo`): active learning on 1,000 real handwritten digits.
#
#   bash examples/quickstart/run.sh [WORK_DIR]     (default: build/quickstart)
#
# 1. writes 1,000 of scikit-learn's real digit scans as PNG files (no download);
# 2. makes a project, extracts features with the bundled ImageNet-pretrained EfficientNet-Lite0;
# 3. a scripted oracle stands in for the person: it answers from the true labels through
#    `patchwork label --import` -- first a fixed validation set of 300;
# 4. two copies of that project run the active-learning loop, 7 batches of 20 labels each:
#    `random` (its first 20 random too), and `auto`, the default (typiclust's coverage of the
#    features picks its own first 20 and goes on until every digit has a label, then
#    cluster-margin); a table and a learning-curve PNG compare them;
# 5. exports the auto project's model and runs `patchwork predict` with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-build/quickstart}
rounds=6 batch=20
rm -rf "$work" && mkdir -p "$work"

truth=$(bash examples/quickstart/make_base.sh "$work")

for strategy in random auto; do
  echo "== $strategy chooses the first $batch images; the oracle answers them" >&2
  cp -r "$work/base" "$work/$strategy"
  patchwork --project "$work/$strategy" sample --strategy "$strategy" -n "$batch" --seed 0 > "$work/$strategy/queue.txt"
  python examples/oracle.py "$work/$strategy/queue.txt" "$truth" > "$work/$strategy/answers.csv"
  patchwork --project "$work/$strategy" label --import "$work/$strategy/answers.csv"
  echo "== active learning with $strategy: $rounds more rounds of $batch labels (sample -> oracle -> label --import -> train)" >&2
  bash examples/quickstart/loop.sh "$work/$strategy" "$strategy" "$rounds" "$batch" "$truth"
done

echo "== learning curves" >&2
python examples/quickstart/compare.py "$work" "$truth" random auto --plot "$work/learning_curves.png"

echo "== patchwork export (the auto project's latest model, labels and predictions)" >&2
patchwork --project "$work/auto" export --out "$work/export"

echo "== patchwork predict with the exported model, on three digits" >&2
patchwork predict --model "$work/export" "$work"/digits/images/digit_000{0,1,2}.png

echo >&2
echo "images:          $work/digits/ (truth.csv has the true labels)" >&2
echo "projects:        $work/{base,random,auto}/ (labels.csv, features.zarr, models/)" >&2
echo "learning curves: $work/learning_curves.png" >&2
echo "export:          $work/export/" >&2
