"""patchwork train (and the run directory it publishes), on features imported with --from-npy
so the head is the only model involved; real images through the default extractor at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from builders import Cli, feature_project, write_images

from patchwork_cli.store import runs
from patchwork_cli.training.keras_head import stratified_indices


@pytest.mark.parametrize("mode", ["class", "instance", "squareroot"])
def test_stratified_sampling_frequencies_match_the_mode(mode):
    # class a: 90 negatives, 10 positives; class b: labelled on 50 rows only, 25 / 25
    labels = np.full((100, 2), np.nan)
    labels[:, 0] = (np.arange(100) < 10).astype(float)
    labels[:50, 1] = np.arange(50) % 2
    draws = stratified_indices(labels, mode, 200_000, np.random.default_rng(1))
    assert draws.min() >= 0 and draws.max() < 100
    positives_a = np.mean(draws < 10)
    if mode == "instance":
        assert positives_a == pytest.approx(0.10, abs=0.01)  # every row equally likely
    else:
        sizes = np.array([90, 10, 25, 25])  # buckets (a,0) (a,1) (b,0) (b,1)
        weights = np.ones(4) if mode == "class" else np.sqrt(sizes)
        p = weights / weights.sum()
        # a row of (a,1) is drawn through bucket (a,1), or through (b,*) when it is one of their members
        expected = p[1] + (p[2] * 5 / 25) + (p[3] * 5 / 25)
        assert positives_a == pytest.approx(expected, abs=0.01)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_train_publishes_a_complete_run(tmp_path):
    project, truth = feature_project(tmp_path)
    result = Cli(project)("train", "--json")
    report = json.loads(result.stdout)
    run_dir = project / "models" / report["run_id"]
    assert (project / "models" / "LATEST").read_text().strip() == report["run_id"]
    for name in ("model.keras", "history.csv", "metrics.json", "config.yaml", "label_counts.json", "run.json"):
        assert (run_dir / name).is_file(), name
    predictions = zarr.open_array(str(run_dir / "predictions.zarr"), mode="r")[:]
    embeddings = zarr.open_array(str(run_dir / "embeddings.zarr"), mode="r")[:]
    assert predictions.shape == (120, 2) and embeddings.shape == (120, 16)
    assert np.isfinite(predictions).all() and ((predictions >= 0) & (predictions <= 1)).all()
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns[:3]) == ["epoch", "loss", "val_loss"] and len(history) == report["epochs"]
    # a learnable problem: the held-out rows 80..119 (never labelled) are mostly right
    accuracy = ((predictions[80:] > 0.5) == truth[80:]).mean()
    assert accuracy > 0.8
    assert report["metrics"]["validation"]["macro"]["roc_auc"] > 0.85
    status = Cli(project)("status").stdout
    assert f"model       {report['run_id']}  validation macro ROC AUC" in status
    assert json.loads((run_dir / "run.json").read_text())["train_rows"] == 50


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_seed_makes_a_run_reproducible(tmp_path):
    project, _ = feature_project(tmp_path, seed=3)
    first = json.loads(Cli(project)("train", "--json").stdout)["run_id"]
    second = json.loads(Cli(project)("train", "--json").stdout)["run_id"]
    read = lambda run: zarr.open_array(str(project / "models" / run / "predictions.zarr"), mode="r")[:]  # noqa: E731
    np.testing.assert_array_equal(read(first), read(second))


@pytest.mark.slow
@pytest.mark.tensorflow
def test_if_changed_skips_then_trains_after_an_edit(tmp_path):
    project, _ = feature_project(tmp_path)
    cli = Cli(project)
    first = json.loads(cli("train", "--json").stdout)["run_id"]
    skipped = cli("train", "--if-changed", "--json")
    assert json.loads(skipped.stdout) == {"skipped": True, "run_id": first}
    assert "nothing to do" in skipped.stderr
    (tmp_path / "one.csv").write_text("filepath,a\nimg/00100.png,1\n")
    Cli(tmp_path)("--project", "proj", "label", "--import", "one.csv")
    again = json.loads(cli("train", "--if-changed", "--json").stdout)
    assert again["skipped"] is False and again["run_id"] != first
    assert runs.list_runs(project) == sorted([first, again["run_id"]])


@pytest.mark.slow
@pytest.mark.tensorflow
def test_rows_without_features_get_nan_predictions(tmp_path):
    project, _ = feature_project(tmp_path)
    write_images(tmp_path / "late", 2, prefix="late")
    Cli(tmp_path)("--project", "proj", "add", "late")
    run_id = json.loads(Cli(project)("train", "--json").stdout)["run_id"]
    predictions = zarr.open_array(str(project / "models" / run_id / "predictions.zarr"), mode="r")[:]
    assert predictions.shape == (122, 2)
    assert np.isnan(predictions[120:]).all() and np.isfinite(predictions[:120]).all()


@pytest.mark.slow
@pytest.mark.tensorflow
def test_clear_errors_and_warnings(tmp_path):
    Cli(tmp_path)("init", "bare", "--images", "-", "--classes", "a", input="x.png\n")
    assert "features not extracted yet" in Cli(tmp_path / "bare")("train", expect=1).stderr
    project, _ = feature_project(tmp_path, labelled=0, validation=0)
    assert "no training labels" in Cli(project)("train", expect=1).stderr
    assert not (project / "models").exists() or runs.list_runs(project) == []
    (tmp_path / "pos.csv").write_text("filepath,a,b\nimg/00000.png,1,0\nimg/00001.png,1,1\n")
    Cli(tmp_path)("--project", "proj", "label", "--import", "pos.csv")
    result = Cli(project)("train")
    assert "class 'a' has no negative training labels" in result.stderr
    assert "no validation labels to score it on" in result.stderr
    assert "head 'conv:8,q': token 2 'q'" in Cli(project)("train", "--head", "conv:8,q", expect=1).stderr


@pytest.mark.slow
@pytest.mark.tensorflow
def test_heads_and_outputs_train_on_feature_maps(tmp_path):
    project, _ = feature_project(tmp_path, epochs=1, batches_per_epoch=3)
    maps = np.random.default_rng(0).normal(size=(120, 4, 4, 8)).astype(np.float32)
    np.save(project / "maps.npy", maps)
    Cli(project)("extract", "--from-npy", "maps.npy", "--overwrite")
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["model"].update(output="focal", batch_norm=True)
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    for head, width in (("conv:8,p,d,r,4", 4), ("pool:max", 8), ("flatten", 128)):
        run_id = json.loads(Cli(project)("train", "--head", head, "--json").stdout)["run_id"]
        run = json.loads((project / "models" / run_id / "run.json").read_text())
        assert run["head"] == head and run["output"] == "focal"
        embeddings = zarr.open_array(str(project / "models" / run_id / "embeddings.zarr"), mode="r")
        assert embeddings.shape == (120, width)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_predictions_stream_chunk_by_chunk(tmp_path, monkeypatch):
    """Peak memory of the prediction pass does not grow with rows: it never reads more than one chunk."""
    from patchwork_cli.store import features as features_module
    from patchwork_cli.training import prediction as prediction_module

    project, _ = feature_project(
        tmp_path, rows=3000, width=1100, labelled=60, validation=20, epochs=1, batches_per_epoch=2
    )
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["training"]["label_folds"] = 0  # the out-of-fold fits read the labelled rows once more
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    reads = []
    original = features_module.FeatureStore.__init__

    def recording_init(self, group):
        original(self, group)
        array = self.features

        class Recorder:
            def __getattr__(self, name):
                return getattr(array, name)

            def __getitem__(self, key):
                block = array[key]
                reads.append(len(block))
                return block

        self.features = Recorder()

    monkeypatch.setattr(features_module.FeatureStore, "__init__", recording_init)
    # reads are bounded by PREDICT_BLOCK_BYTES, in whole chunks: at its floor, one chunk at a time
    monkeypatch.setattr(prediction_module, "PREDICT_BLOCK_BYTES", 1)
    Cli(project)("train")
    chunk = zarr.open_group(str(project / "features.zarr"), mode="r")["features"].chunks[0]
    assert chunk < 3000 and reads and max(reads) <= chunk
    assert sum(reads) == 3000  # every row predicted, one chunk at a time


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.parametrize("stage", ["fitting", "writing the run"])
def test_a_killed_train_keeps_latest(tmp_path, stage):
    project, _ = feature_project(tmp_path, rows=30_000, width=64, epochs=1, batches_per_epoch=2)
    first = json.loads(Cli(project)("train", "--json").stdout)["run_id"]
    config_text = (project / "patchwork.yaml").read_text()
    if stage == "fitting":
        config = yaml.safe_load(config_text)
        config["training"].update(epochs=10_000, patience=None)
        (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "patchwork_cli", "train"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        staged = list((project / "models").glob(".incomplete-*"))
        if (stage == "writing the run" and staged) or (stage == "fitting" and time.monotonic() > deadline - 50):
            break
        time.sleep(0.002)
    assert process.poll() is None, "train finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (project / "models" / "LATEST").read_text().strip() == first
    assert runs.list_runs(project) == [first]
    assert "model       " + first in Cli(project)("status").stdout
    (project / "patchwork.yaml").write_text(config_text)
    second = json.loads(Cli(project)("train", "--json").stdout)["run_id"]
    assert runs.list_runs(project) == sorted([first, second])


@pytest.mark.slow
@pytest.mark.tensorflow
def test_real_digits_through_the_default_extractor(tmp_path):
    """The bundled 200 handwritten digits (scikit-learn's load_digits): 140 training labels,
    60 validation. A trivial model scores a macro ROC AUC of 0.5; this run scored about 0.98
    when written (asserted with a margin)."""
    root = Path(__file__).resolve().parents[1]
    truth = pd.read_csv(root / "examples" / "digits" / "truth.csv")
    classes = list(truth.columns[1:])
    cli = Cli(root)
    cli("init", str(tmp_path / "digits"), "--images", "examples/digits/images", "--classes", ",".join(classes))
    project = tmp_path / "digits"
    truth["validation"] = np.arange(len(truth)) >= 140
    truth.to_csv(tmp_path / "answers.csv", index=False)
    cli("--project", str(project), "extract")
    cli("--project", str(project), "label", "--import", str(tmp_path / "answers.csv"))
    report = json.loads(Cli(project)("train", "--json").stdout)
    auc = report["metrics"]["validation"]["macro"]["roc_auc"]
    print(f"validation macro ROC AUC on real digits: {auc:.3f}")
    assert auc > 0.9


@pytest.mark.slow
@pytest.mark.tensorflow
def test_evaluate_reports_tables_plots_and_runs(tmp_path):
    project, _ = feature_project(tmp_path)
    cli = Cli(project)
    first = json.loads(cli("train", "--json").stdout)["run_id"]
    result = cli("evaluate")
    assert result.stdout.startswith(f"run {first}\n")
    assert "macro" in result.stdout and "validation" in result.stdout
    metrics = json.loads(cli("evaluate", "--json").stdout)
    assert metrics["validation"]["classes"]["a"]["positives"] + metrics["validation"]["classes"]["a"]["negatives"] == 30
    assert metrics["validation"]["macro"]["roc_auc"] > 0.85
    report_dir = project / "reports" / first
    assert sorted(p.name for p in report_dir.glob("*.png")) == ["hist_a.png", "hist_b.png"]
    assert (project / "reports" / "learning_curve.png").stat().st_size > 10_000
    (tmp_path / "more.csv").write_text("filepath,a,b\n" + "".join(f"img/{i:05d}.png,1,0\n" for i in range(80, 90)))
    Cli(tmp_path)("--project", "proj", "label", "--import", "more.csv")
    second = json.loads(cli("train", "--json").stdout)["run_id"]
    table = cli("evaluate", "--runs").stdout.splitlines()
    assert table[1].startswith(first) and table[2].startswith(second)
    assert table[1].split()[1] == "80" and table[2].split()[1] == "90"
    # an older run is scored against today's labels: its validation rows did not change
    assert json.loads(cli("evaluate", "--run", first, "--json").stdout)["validation"] == metrics["validation"]
    unknown = cli("evaluate", "--run", "nope", expect=1).stderr
    assert f"unknown run 'nope'; runs: {first}, {second}" in unknown


@pytest.mark.slow
@pytest.mark.tensorflow
def test_evaluate_without_validation_labels_says_so(tmp_path):
    project, _ = feature_project(tmp_path, validation=0)
    cli = Cli(project)
    assert "no trained model yet" in cli("evaluate", expect=1).stderr
    cli("train")
    result = cli("evaluate")
    assert "no validation labels" in result.stdout
    assert json.loads(cli("evaluate", "--json").stdout)["validation"]["macro"]["roc_auc"] is None


@pytest.mark.slow
@pytest.mark.tensorflow
def test_sgd_with_cosine_decay_and_weight_decay(tmp_path):
    project, _ = feature_project(tmp_path, optimizer="sgd", momentum=0.9, cosine_decay_steps=20, weight_decay=0.01)
    report = json.loads(Cli(project)("train", "--json").stdout)
    saved = yaml.safe_load((project / "models" / report["run_id"] / "config.yaml").read_text())["training"]
    assert saved["optimizer"] == "sgd" and saved["cosine_decay_steps"] == 20 and saved["weight_decay"] == 0.01
    assert report["metrics"]["validation"]["macro"]["roc_auc"] > 0.7


@pytest.mark.slow
@pytest.mark.tensorflow
def test_early_stopping_on_validation_loss(tmp_path):
    project, _ = feature_project(tmp_path, epochs=80, batches_per_epoch=10, patience=2, learning_rate=0.05)
    report = json.loads(Cli(project)("train", "--json").stdout)
    assert report["epochs"] < 80  # validation loss stopped improving, so training stopped
