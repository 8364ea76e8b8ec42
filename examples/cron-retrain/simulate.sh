#!/usr/bin/env bash
# Three simulated days of the cron loop in ./Makefile, on the bundled digit images.
#
#   bash examples/cron-retrain/simulate.sh [WORK_DIR]     (default: build/cron-retrain)
#
# Day 0: 80 images are in the inbox; the project is made and a person labels 40 of them.
# Days 1-3: 40 new images arrive; a cron tick (`make`) adds them, extracts only those 40,
# retrains, scores and writes the next queue; a second tick the same day finds nothing new
# and runs no patchwork command (checked: the script fails if it does); then the person
# labels that day's queue (the scripted oracle answers for them through label --import).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-build/cron-retrain}
rm -rf "$work" && mkdir -p "$work/inbox" && cd "$work"

images=("$repo"/examples/digits/images/digit_*.png)
tick() { make --no-print-directory -f "$repo/examples/cron-retrain/Makefile" 2>&1; }
label_queue() {  # the person answers the queue; every 4th answer goes to validation
  python "$repo/examples/oracle.py" "$1" "$repo/examples/digits/truth.csv" --validation-every 4 > answers.csv
  patchwork --project project label --import answers.csv
}

echo "== day 0: 80 images in the inbox; patchwork init; a person labels 40 of them"
cp "${images[@]:0:80}" inbox/
patchwork init project --images inbox --classes zero,one,two,three,four,five,six,seven,eight,nine
printf '%s\n' "${images[@]:0:40}" | sed "s|.*/|inbox/|" > first.txt
label_queue first.txt
echo "== day 0: cron tick"
tick

for day in 1 2 3; do
  echo "== day $day: 40 new images arrive; cron tick"
  cp "${images[@]:$((40 + 40 * day)):40}" inbox/
  tick
  echo "== day $day: second cron tick, nothing new"
  output=$(tick)
  echo "${output:-(make ran no command)}"
  if grep -q '^patchwork' <<<"$output"; then
    echo "error: the second tick of an unchanged day ran patchwork commands" >&2
    exit 1
  fi
  echo "== day $day: the person labels the queue ($(wc -l < .make/queue.txt) images)"
  label_queue .make/queue.txt
done

echo
echo "project: $work/project   metrics: $work/.make/metrics.json   next queue: $work/.make/queue.txt"
patchwork --project project evaluate --runs
