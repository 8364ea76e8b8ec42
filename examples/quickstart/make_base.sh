#!/usr/bin/env bash
# The quickstart's starting point, shared by every strategy (and by benchmarks/active_learning.py):
# 1,000 real digit images from scikit-learn, a multiclass project over them (one digit per image)
# with pooled EfficientNet-Lite0 features, and 300 validation labels from the scripted oracle.
# Prints the truth table's path.
#
#   bash examples/quickstart/make_base.sh WORK_DIR      (makes WORK_DIR/digits and WORK_DIR/base)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$1
classes=zero,one,two,three,four,five,six,seven,eight,nine

echo "== 1,000 digit images from scikit-learn -> $work/digits/" >&2
truth=$(python "$here/../digits/make_images.py" "$work/digits" 1000)

echo "== patchwork init $work/base" >&2
patchwork init "$work/base" --images "$work/digits/images" --classes "$classes" --task multiclass
# Pooled 1280-d vectors keep the demo small and quick; the default head (auto) takes them
# with a linear layer (flatten).
sed -i -e 's/^  pooling: null/  pooling: avg/' "$work/base/patchwork.yaml"

echo "== patchwork extract (EfficientNet-Lite0)" >&2
patchwork --project "$work/base" extract

echo "== the oracle sets aside 300 validation labels (the last 300 images)" >&2
ls "$work"/digits/images/*.png | tail -n 300 > "$work/validation.txt"
python "$here/../oracle.py" "$work/validation.txt" "$truth" --validation-every 1 > "$work/validation.csv"
patchwork --project "$work/base" label --import "$work/validation.csv" >&2
echo "$truth"
