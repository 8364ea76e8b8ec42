"""`auto`, the default strategy, through `patchwork sample`: random before any extract,
typiclust (coverage of the features) until every class has a positive training label
and a model exists, then cluster-margin (multiclass) or badge (multilabel)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import Cli, write_images, write_run

pytestmark = pytest.mark.slow

CLASSES = ["cat", "dog", "bird"]
GROUPS, PER_GROUP = 3, 15


@pytest.fixture(params=["multiclass", "multilabel"])
def project(request, tmp_path):
    """45 images in three tight, far-apart groups of features (from a .npy), no labels, no run."""
    write_images(tmp_path / "images", GROUPS * PER_GROUP)
    Cli(tmp_path)("init", "proj", "--images", "images", "--classes", ",".join(CLASSES), "--task", request.param)
    rng = np.random.default_rng(0)
    centres = np.eye(GROUPS, 8) * 10
    features = np.repeat(centres, PER_GROUP, axis=0) + rng.normal(scale=0.1, size=(GROUPS * PER_GROUP, 8))
    np.save(tmp_path / "features.npy", features.astype(np.float32))
    return tmp_path / "proj"


def picks(project, n=3):
    return json.loads(Cli(project)("sample", "-n", str(n), "--format", "json").stdout)


def test_auto_moves_from_random_to_coverage_to_diverse_uncertainty(project):
    task = json.loads(Cli(project)("status", "--json").stdout)["task"]
    assert {p["strategy"] for p in picks(project)} == {"random"}  # nothing extracted yet

    Cli(project)("extract", "--from-npy", "../features.npy")
    chosen = picks(project)
    assert {p["strategy"] for p in chosen} == {"typiclust"}
    assert sorted(p["row"] // PER_GROUP for p in chosen) == [0, 1, 2]  # one typical image of each group

    # three positives of each class, one class per group, but no model yet: still coverage
    lines = ["filepath," + ",".join(CLASSES)]
    for group, name in enumerate(CLASSES):
        for row in range(group * PER_GROUP, group * PER_GROUP + 3):
            lines.append(f"../images/img_{row:04d}.png," + ",".join("1" if c == name else "0" for c in CLASSES))
    (project / "edits.csv").write_text("\n".join(lines) + "\n")
    Cli(project)("label", "--import", "edits.csv")
    assert {p["strategy"] for p in picks(project)} == {"typiclust"}

    p = np.full((GROUPS * PER_GROUP, 3), 1 / 3, np.float32)
    write_run(project, p, h=np.random.default_rng(1).normal(size=(len(p), 4)), classes=CLASSES)
    expected = "cluster-margin" if task == "multiclass" else "badge"
    assert {p["strategy"] for p in picks(project)} == {expected}


def test_validation_labels_do_not_count_as_covered(project):
    """Held-out labels teach the model nothing: typiclust still takes a typical image of their group."""
    Cli(project)("extract", "--from-npy", "../features.npy")
    lines = ["filepath,cat,validation"] + [f"../images/img_{row:04d}.png,1,true" for row in range(8)]
    (project / "validation.csv").write_text("\n".join(lines) + "\n")
    Cli(project)("label", "--import", "validation.csv")
    chosen = json.loads(Cli(project)("sample", "-n", "3", "--strategy", "typiclust", "--format", "json").stdout)
    assert sorted(p["row"] // PER_GROUP for p in chosen) == [0, 1, 2]
