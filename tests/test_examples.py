"""The cron/Makefile example in its simulated form: three days of arrivals, for real.

It runs examples/cron-retrain/simulate.sh as a subprocess with the real CLI, the bundled
EfficientNet-Lite0 and make. The script itself fails when a second cron tick on an
unchanged day runs any patchwork command; here we also check what each tick did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_cron_example_does_only_what_changed(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    work = tmp_path / "cron"
    result = subprocess.run(
        ["bash", str(REPO / "examples/cron-retrain/simulate.sh"), str(work)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    days = re.split(r"^== ", output, flags=re.MULTILINE)
    ticks = {block.splitlines()[0]: block for block in days if block}
    # each day's first tick extracted exactly that day's 40 new images, and trained
    for day in (1, 2, 3):
        first = ticks[f"day {day}: 40 new images arrive; cron tick"]
        assert "extracted 40 image(s)" in first
        assert "trained run" in first
        second = ticks[f"day {day}: second cron tick, nothing new"]
        assert "(make ran no command)" in second and "patchwork" not in second
    project = work / "project"
    assert len(list((project / "models").glob("2*"))) == 4  # day 0 and the three days
    metrics = json.loads((work / ".make/metrics.json").read_text())
    assert metrics["validation"]["macro"]["roc_auc"] > 0.5
    queue = (work / ".make/queue.txt").read_text().split()
    assert len(queue) == 20 and all(Path(work, path).is_file() for path in queue)
