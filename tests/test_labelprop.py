"""Label propagation (`model.head: labelprop`): the algorithm on a graph small enough to write out
by hand, then a labelprop run through the CLI serving sample and evaluate, refused by export
and predict, and its config keys validated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from builders import Cli, cluster_project, snapshot

from patchwork_cli.modeling.labelprop import knn_graph, probabilities_from, propagate
from patchwork_cli.util.projection import unit_rows

# --- the algorithm, by hand ------------------------------------------------------------

# Six unit vectors in the plane: points 0, 1, 2 at 0, 10 and 20 degrees, points 3, 4, 5 at 70, 80
# and 90 degrees. With k = 2 each point's neighbours are the other two of its cluster, except that
# point 2 (20 degrees) is 50 degrees from point 3 and 20 from point 0: its neighbours are 1 and 0;
# point 3's are 4 and 5. So k = 2 gives two disconnected triangles, and k = 3 adds, for each point,
# its nearest point of the other cluster (0->3, 1->3, 2->3, 3->2, 4->2, 5->2).
ANGLES = np.radians([0, 10, 20, 70, 80, 90])
POINTS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1) * np.array([[1], [2], [3], [1], [5], [1]])  # norms vary
NEIGHBOURS_K3 = {0: [1, 2, 3], 1: [0, 2, 3], 2: [1, 0, 3], 3: [4, 5, 2], 4: [3, 5, 2], 5: [4, 3, 2]}


def hand_affinity(neighbours: dict[int, list[int]], gamma: float = 3.0) -> np.ndarray:
    """W + W^T with W_ij = cos(angle_i - angle_j) ** gamma for j a neighbour of i."""
    w = np.zeros((6, 6))
    for i, js in neighbours.items():
        for j in js:
            w[i, j] = np.cos(ANGLES[i] - ANGLES[j]) ** gamma
    return w + w.T


def hand_propagation(w: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Z solving (I - alpha D^-1/2 W D^-1/2) Z = Y directly."""
    d = 1 / np.sqrt(w.sum(axis=1))
    return np.linalg.solve(np.eye(len(w)) - alpha * d[:, None] * w * d[None, :], y)


def test_the_knn_graph_is_the_hand_built_one():
    w, used = knn_graph(unit_rows(POINTS), 3)
    assert used == 3
    np.testing.assert_allclose(w.toarray(), hand_affinity(NEIGHBOURS_K3), rtol=1e-6)
    assert w.nnz == np.count_nonzero(hand_affinity(NEIGHBOURS_K3))  # sparse: only the kNN edges
    # k = 2: two triangles, no edge between the clusters
    w2, _ = knn_graph(unit_rows(POINTS), 2)
    assert not w2.toarray()[:3, 3:].any() and not w2.toarray()[3:, :3].any()


@pytest.mark.parametrize("block_bytes", [4 * 6, 4 * 6 * 2, 64 * 2**20])  # one row a block, two, all
def test_the_graph_does_not_depend_on_the_block_size(block_bytes):
    w, _ = knn_graph(unit_rows(POINTS), 3, block_bytes=block_bytes)
    np.testing.assert_allclose(w.toarray(), hand_affinity(NEIGHBOURS_K3), rtol=1e-6)


def test_multiclass_propagation_is_the_hand_computed_solve():
    # seeds: point 0 is class 0, point 5 is class 1; one 0-only row (point 4: "not class 0") seeds nothing
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, np.nan]])
    result = propagate(POINTS, [0, 5, 4], labels, "multiclass", k=3, iterations=20, alpha=0.99)
    y = np.zeros((6, 2))
    y[0, 0] = y[5, 1] = 1.0  # each class's seeds share 1: one seed each
    z = hand_propagation(hand_affinity(NEIGHBOURS_K3), y, 0.99)
    expected = z / z.sum(axis=1, keepdims=True)  # z > 0 everywhere: the graph is connected
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert (result.probabilities[:3, 0] > 0.5).all() and (result.probabilities[3:, 1] > 0.5).all()
    # conjugate gradient on 6 unknowns: exact within 6 steps, then it stops (tolerance 1e-6)
    assert len(result.residuals) <= 6 and result.residuals[-1] < 1e-6


def test_a_fixed_point_iteration_reaches_the_same_scores():
    """The paper's alternative to conjugate gradient, Z <- alpha W_n Z + Y, converges to the same Z."""
    w = hand_affinity(NEIGHBOURS_K3)
    d = 1 / np.sqrt(w.sum(axis=1))
    w_n = d[:, None] * w * d[None, :]
    y = np.zeros((6, 2))
    y[1, 0] = y[4, 1] = 1.0
    z = np.zeros_like(y)
    for _ in range(5000):
        z = 0.9 * w_n @ z + y
    result = propagate(POINTS, [1, 4], np.array([[1.0, 0.0], [0.0, 1.0]]), "multiclass", k=3, alpha=0.9)
    np.testing.assert_allclose(result.probabilities, z / z.sum(axis=1, keepdims=True), atol=1e-6)


def test_multilabel_propagates_positives_against_negatives():
    # one class: point 0 positive, points 4 and 5 negative (the negatives' column shares 1: 1/2 each)
    labels = np.array([[1.0], [0.0], [0.0]])
    result = propagate(POINTS, [0, 4, 5], labels, "multilabel", k=3, alpha=0.99)
    y = np.zeros((6, 2))
    y[0, 0], y[4, 1], y[5, 1] = 1.0, 0.5, 0.5
    z = hand_propagation(hand_affinity(NEIGHBOURS_K3), y, 0.99)
    np.testing.assert_allclose(result.probabilities[:, 0], z[:, 0] / z.sum(axis=1), atol=1e-6)
    assert (result.probabilities[:3, 0] > 0.5).all() and (result.probabilities[3:, 0] < 0.5).all()


def test_rows_no_seed_reaches_get_equal_shares():
    # k = 2: the second triangle has no seed
    result = propagate(POINTS, [0, 1], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "multiclass", k=2)
    np.testing.assert_allclose(result.probabilities[3:], 1 / 3)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert probabilities_from(np.zeros((2, 2)), 1, "multilabel").tolist() == [[0.5], [0.5]]


# --- a labelprop run through the CLI -----------------------------------------------------


@pytest.fixture(scope="module")
def labelprop_run(tmp_path_factory) -> tuple[Path, dict, np.ndarray]:
    project, truth = cluster_project(tmp_path_factory.mktemp("labelprop"))
    result = Cli(project)("train", "--head", "labelprop", "--json")
    report = json.loads(result.stdout)
    assert f"propagated the labels of 30 rows in {report['epochs']} iterations (60 validation)" in result.stderr
    assert report["head"] == "labelprop"
    return project, report, truth


@pytest.mark.slow
def test_a_labelprop_run_looks_like_any_run(labelprop_run):
    project, report, truth = labelprop_run
    run_dir = project / "models" / report["run_id"]
    assert (project / "models" / "LATEST").read_text().strip() == report["run_id"]
    for name in ("history.csv", "metrics.json", "config.yaml", "label_counts.json", "run.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "model.keras").exists()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["head"] == "labelprop" and run["train_rows"] == 30 and run["validation_rows"] == 60
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["labelprop_k"] == 10
    predictions = zarr.open_array(str(run_dir / "predictions.zarr"), mode="r")[:]
    embeddings = zarr.open_array(str(run_dir / "embeddings.zarr"), mode="r")[:]
    assert predictions.shape == (300, 3) and embeddings.shape == (300, 32)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert (predictions.argmax(axis=1) == truth).mean() > 0.9  # well-separated clusters
    assert report["metrics"]["validation"]["multiclass"]["accuracy"] > 0.9
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "seconds"] and len(history) == report["epochs"] <= 20


@pytest.mark.slow
def test_a_labelprop_run_serves_sample_and_evaluate(labelprop_run):
    project, report, _ = labelprop_run
    cli = Cli(project)
    picked = json.loads(cli("sample", "--strategy", "margin", "-n", "5", "--format", "json").stdout)
    assert len(picked) == 5
    labelled = {f"img/{i:05d}.png" for i in range(90)}
    assert not {record["filepath"] for record in picked} & labelled  # unlabelled rows only
    for strategy in ("cluster-margin", "badge"):  # the embeddings serve the diversity strategies too
        assert len(json.loads(cli("sample", "--strategy", strategy, "-n", "4", "--format", "json").stdout)) == 4
    metrics = json.loads(cli("evaluate", "--json").stdout)
    macro = metrics["validation"]["macro"]
    assert 0.9 < macro["roc_auc"] <= 1.0 and 0.0 <= macro["average_precision"] <= 1.0
    assert cli("evaluate").stdout.startswith(f"run {report['run_id']}\n")
    assert f"model       {report['run_id']}" in cli("status").stdout


@pytest.mark.slow
def test_export_and_predict_of_a_labelprop_run_refuse_in_one_line(labelprop_run, tmp_path):
    project, report, _ = labelprop_run
    before = snapshot(project)
    result = Cli(project)("export", "--out", tmp_path / "out", expect=1)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"run {report['run_id']} is a label-propagation run: it has no model to export" in message
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.export-*"))
    assert snapshot(project) == before
    # its predictions still export
    Cli(project)("export", "--out", tmp_path / "preds", "--what", "labels,predictions")
    assert len(pd.read_csv(tmp_path / "preds" / "predictions.csv")) == 300
    (tmp_path / "x.png").write_bytes(b"")
    refused = Cli(project)("predict", str(tmp_path / "x.png"), expect=1).stderr.strip()
    assert len(refused.splitlines()) == 1 and "is a label-propagation run: it has no model to predict" in refused


def test_a_multilabel_labelprop_run(tmp_path):
    project, truth = cluster_project(tmp_path, task="multilabel", labelprop_k=5, labelprop_iterations=10)
    report = json.loads(Cli(project)("train", "--head", "labelprop", "--json").stdout)
    predictions = zarr.open_array(str(project / "models" / report["run_id"] / "predictions.zarr"), mode="r")[:]
    assert ((predictions >= 0) & (predictions <= 1)).all() and report["epochs"] <= 10
    assert ((predictions > 0.5) == np.eye(3)[truth]).mean() > 0.9
    assert report["metrics"]["validation"]["macro"]["roc_auc"] > 0.9


@pytest.mark.slow
def test_labelprop_needs_no_tensorflow(tmp_path):
    project, _ = cluster_project(tmp_path, head="labelprop")
    code = (
        "import sys; from patchwork_cli.store.project import open_project; "
        "from patchwork_cli.training.train import train; "
        f"train(open_project({str(project)!r})); "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("labelprop_k", 0, "model.labelprop_k: must be at least 1, got 0"),
        ("labelprop_k", "ten", "model.labelprop_k: expected an integer, got 'ten'"),
        ("labelprop_iterations", 0, "model.labelprop_iterations: must be at least 1, got 0"),
        ("labelprop_alpha", 1.0, "model.labelprop_alpha: must be below 1, got 1.0"),
        ("labelprop_alpha", -0.5, "model.labelprop_alpha: must be at least 0.0, got -0.5"),
        ("labelprop_kk", 3, "unknown key 'model.labelprop_kk'"),
    ],
)
def test_bad_labelprop_settings_are_refused_naming_the_key(tmp_path, key, value, message):
    (tmp_path / "list.txt").write_text("x.png\n")
    Cli(tmp_path)("init", "proj", "--images", "list.txt", "--classes", "a,b")
    path = tmp_path / "proj" / "patchwork.yaml"
    config = yaml.safe_load(path.read_text())
    config["model"][key] = value
    path.write_text(yaml.safe_dump(config))
    assert message in Cli(tmp_path / "proj")("status", expect=1).stderr


def test_a_bad_labelprop_head_is_refused(tmp_path):
    project, _ = cluster_project(tmp_path)
    error = Cli(project)("train", "--head", "labelprop:5", expect=1).stderr
    assert "head 'labelprop:5': labelprop takes no arguments (its settings are model.labelprop_*)" in error
