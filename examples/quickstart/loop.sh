#!/usr/bin/env bash
# The active-learning loop on one project, with the scripted oracle as the person:
# train, then ROUNDS times: sample BATCH images with STRATEGY, the oracle labels them
# (patchwork label --import), train again. Every run lands in PROJECT/models/.
#
#   bash examples/quickstart/loop.sh PROJECT STRATEGY ROUNDS BATCH TRUTH.csv [SEED]
set -euo pipefail
project=$1 strategy=$2 rounds=$3 batch=$4 truth=$5 seed=${6:-0}
oracle=$(dirname "$0")/../oracle.py

patchwork --project "$project" train > /dev/null
for round in $(seq 1 "$rounds"); do
  patchwork --project "$project" sample --strategy "$strategy" -n "$batch" --seed "$((seed * 1000 + round))" \
    > "$project/queue.txt"
  python "$oracle" "$project/queue.txt" "$truth" > "$project/answers.csv"
  patchwork --project "$project" label --import "$project/answers.csv" 2> /dev/null
  patchwork --project "$project" train > /dev/null
done
