#!/usr/bin/env bash
# The quickstart: a project from the bundled example images (200 real handwritten
# digits from scikit-learn's load_digits), features from the bundled ImageNet-pretrained
# EfficientNet-Lite0, labels fed in by a scripted oracle that answers from the true
# labels, and the project's status.
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

echo "== the oracle labels 40 images (patchwork label --import)" >&2
head -n 41 examples/digits/truth.csv > "$project/oracle-answers.csv"
patchwork --project "$project" label --import "$project/oracle-answers.csv"

echo "== patchwork status" >&2
patchwork --project "$project" status

echo >&2
echo "project:      $project" >&2
echo "label table:  $project/labels.csv" >&2
echo "config:       $project/patchwork.yaml" >&2
echo "features:     $project/features.zarr" >&2
