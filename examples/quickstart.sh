#!/usr/bin/env bash
# The quickstart: a project from the bundled example images (200 real handwritten
# digits from scikit-learn's load_digits), features from the bundled ImageNet-pretrained
# EfficientNet-Lite0, labels fed in by a scripted oracle that answers from the true
# labels, a trained head, its evaluation, and the project's status.
#
#   bash examples/quickstart.sh [PROJECT_DIR]     (default: build/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
project=${1:-build/quickstart}
classes=zero,one,two,three,four,five,six,seven,eight,nine

echo "== patchwork init $project" >&2
patchwork init "$project" --images examples/digits/images --classes "$classes" --force

echo "== patchwork extract (EfficientNet-Lite0, 224x224 feature maps)" >&2
patchwork --project "$project" extract

echo "== the oracle labels 100 images, the last 40 of them for validation (patchwork label --import)" >&2
head -n 101 examples/digits/truth.csv \
  | awk -F, 'NR == 1 { print $0 ",validation"; next } { print $0 "," (NR > 61 ? "true" : "false") }' \
  > "$project/oracle-answers.csv"
patchwork --project "$project" label --import "$project/oracle-answers.csv"

echo "== patchwork train" >&2
patchwork --project "$project" train

echo "== patchwork evaluate" >&2
patchwork --project "$project" evaluate

echo "== patchwork status" >&2
patchwork --project "$project" status

echo >&2
echo "project:      $project" >&2
echo "label table:  $project/labels.csv" >&2
echo "config:       $project/patchwork.yaml" >&2
echo "features:     $project/features.zarr" >&2
echo "models:       $project/models/ (LATEST: $(cat "$project/models/LATEST"))" >&2
echo "reports:      $project/reports/" >&2
