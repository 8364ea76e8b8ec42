#!/usr/bin/env bash
# The quickstart (`make demo`): active learning on 1,000 real handwritten digits.
#
#   bash examples/quickstart/run.sh [WORK_DIR]     (default: build/quickstart)
#
# 1. writes 1,000 of scikit-learn's real digit scans as PNG files (no download);
# 2. makes a project, extracts features with the bundled ImageNet-pretrained EfficientNet-Lite0;
# 3. a scripted oracle stands in for the person: it answers from the true labels through
#    `patchwork label --import` -- first a fixed validation set of 300, then 20 random seed labels;
# 4. three copies of that project run the active-learning loop (6 rounds of 20 labels) with
#    random, maxent and badge sampling; a table and a learning-curve PNG compare them;
# 5. exports the badge project's model and runs `patchwork predict` with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-build/quickstart}
rounds=6 batch=20
rm -rf "$work" && mkdir -p "$work"

truth=$(bash examples/quickstart/make_base.sh "$work")

echo "== the oracle answers 20 randomly sampled images (the seed labels every strategy starts from)" >&2
patchwork --project "$work/base" sample --strategy random -n "$batch" --seed 0 > "$work/seed.txt"
python examples/oracle.py "$work/seed.txt" "$truth" > "$work/seed.csv"
patchwork --project "$work/base" label --import "$work/seed.csv"

for strategy in random maxent badge; do
  echo "== active learning with $strategy: $rounds rounds of $batch labels (sample -> oracle -> label --import -> train)" >&2
  cp -r "$work/base" "$work/$strategy"
  bash examples/quickstart/loop.sh "$work/$strategy" "$strategy" "$rounds" "$batch" "$truth"
done

echo "== learning curves" >&2
python examples/quickstart/compare.py "$work" "$truth" random maxent badge --plot "$work/learning_curves.png"

echo "== patchwork export (the badge project's latest model, labels and predictions)" >&2
patchwork --project "$work/badge" export --out "$work/export"

echo "== patchwork predict with the exported model, on three digits" >&2
patchwork predict --model "$work/export" "$work"/digits/images/digit_000{0,1,2}.png

echo >&2
echo "images:          $work/digits/ (truth.csv has the true labels)" >&2
echo "projects:        $work/{base,random,maxent,badge}/ (labels.csv, features.zarr, models/)" >&2
echo "learning curves: $work/learning_curves.png" >&2
echo "export:          $work/export/" >&2
