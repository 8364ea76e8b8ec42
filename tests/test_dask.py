"""extract and train on a Dask cluster (a 2-worker LocalCluster on this machine), and feature
stores outside the project directory: features and predictions bit-identical to the
single-process run, a worker SIGKILLed mid-run, Dask kept optional."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from builders import Cli, assert_same_store, feature_project, image_project, store

from patchwork_cli.store.features import DONE, PENDING

distributed = pytest.importorskip("distributed")
ROWS = 2000  # 8 chunks of 256 rows of the tiny model's 16x16x64 feature maps


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, as `--dask local --workers 2` starts them."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        yield local, client


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model):
    """A single-process extraction of ROWS images, two of them broken: what every Dask run must equal."""
    root = tmp_path_factory.mktemp("reference")
    project = image_project(root, ROWS, tiny_model, name="reference")
    _break_images(root)
    Cli(project)("extract")
    return root, project


def _break_images(root: Path) -> None:
    images = sorted((root / "images").iterdir())
    images[3].write_bytes(b"")
    images[700].write_text("not a picture")


def _same_project(reference_root: Path, root: Path, model: Path, name: str, **storage) -> Path:
    """A project over the reference's very images (broken ones included)."""
    os.symlink(reference_root / "images", root / "images")
    project = image_project(root, ROWS, model, name=name)
    if storage:
        config = yaml.safe_load((project / "patchwork.yaml").read_text())
        config["storage"] = storage
        (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    return project


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.dask
def test_local_cluster_extracts_bit_identical_features_into_a_file_url_store(tmp_path, reference, tiny_model):
    reference_root, reference_project = reference
    shared = tmp_path / "shared" / "feats.zarr"
    project = _same_project(reference_root, tmp_path, tiny_model, "proj", features=f"file://{shared}")
    result = Cli(project)("extract", "--dask", "local", "--workers", "2", "--json")
    report = json.loads(result.stdout)
    assert report["processed"] == ROWS and report["done"] == ROWS - 2 and report["failed"] == 2
    assert "2 image(s) failed" in result.stderr
    assert not (project / "features.zarr").exists()
    assert_same_store(zarr.open_group(str(shared), mode="r"), store(reference_project))
    failures = (project / "features_failures.csv").read_text()
    assert failures == (reference_project / "features_failures.csv").read_text()
    assert f"features    {ROWS - 2} done, 2 failed, 0 pending" in Cli(project)("status").stdout
    # a rerun finds nothing pending, exactly like single-process extract
    assert json.loads(Cli(project)("extract", "--dask", "local", "--workers", "1", "--json").stdout)["processed"] == 0


def _extract_while_killing_a_worker(project: Path, cluster) -> tuple[object, np.ndarray]:
    """Run `extract --dask ADDRESS` and SIGKILL a busy worker process once the first chunk is on disk;
    returns the CLI result and the store's status at the moment of the kill."""
    local, client = cluster
    client.wait_for_workers(2, timeout=120)
    pids = client.run(os.getpid)  # worker address -> process id
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault(
            "result", Cli(project)("extract", "--dask", local.scheduler_address, "--json", expect=None)
        )
    )
    thread.start()
    chunk_dir = project / "features.zarr" / "status" / "c"
    deadline = time.monotonic() + 180
    while thread.is_alive() and time.monotonic() < deadline:
        if chunk_dir.exists() and any(chunk_dir.iterdir()):
            break
        time.sleep(0.005)
    assert thread.is_alive(), "extract finished before a worker could be killed"
    busy = [worker for worker, tasks in client.processing().items() if tasks]
    os.kill(pids[busy[0]], signal.SIGKILL)  # a worker in the middle of a chunk
    at_kill = zarr.open_group(str(project / "features.zarr"), mode="r")["status"][:]
    thread.join(timeout=300)
    return outcome["result"], at_kill


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.dask
def test_a_worker_killed_mid_run_is_replaced_and_the_store_is_identical(tmp_path, reference, cluster, tiny_model):
    reference_root, reference_project = reference
    project = _same_project(reference_root, tmp_path, tiny_model, "killed")
    result, at_kill = _extract_while_killing_a_worker(project, cluster)
    assert (at_kill == PENDING).any(), "the kill came after the last chunk"
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pending"] == 0 and report["done"] == ROWS - 2
    assert_same_store(store(project), store(reference_project))


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.dask
def test_a_run_that_cannot_retry_fails_clearly_and_the_rerun_resumes(tmp_path, reference, cluster, tiny_model):
    reference_root, reference_project = reference
    project = _same_project(reference_root, tmp_path, tiny_model, "resumed")
    local, _ = cluster
    local.scheduler.allowed_failures = 0  # the task on the killed worker fails at once
    try:
        result, at_kill = _extract_while_killing_a_worker(project, cluster)
    finally:
        local.scheduler.allowed_failures = 3
    assert result.exit_code == 1
    assert "error: extract on the Dask cluster stopped: KilledWorker" in result.stderr
    assert "run the same command again to go on" in result.stderr
    partial = store(project)["status"][:]
    assert (partial == PENDING).any() and (partial == DONE).any()
    # (a task already running on the other worker may still finish its chunk: the same bytes a rerun writes)
    report = json.loads(Cli(project)("extract", "--dask", local.scheduler_address, "--json").stdout)
    assert 0 < report["processed"] <= int((partial == PENDING).sum()) and report["pending"] == 0
    assert_same_store(store(project), store(reference_project))


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.dask
def test_train_predicts_on_the_cluster_exactly_as_in_process(tmp_path, cluster):
    project, _ = feature_project(tmp_path, rows=9000)  # 16-wide features: 3 chunks of 4096 rows
    cli = Cli(project)
    alone = json.loads(cli("train", "--json").stdout)["run_id"]
    spread = json.loads(cli("train", "--dask", cluster[0].scheduler_address, "--json").stdout)["run_id"]
    for name in ("predictions.zarr", "embeddings.zarr"):
        single = zarr.open_array(str(project / "models" / alone / name), mode="r")
        dask = zarr.open_array(str(project / "models" / spread / name), mode="r")
        assert dask.shape[0] == 9000 and dask.chunks == single.chunks
        np.testing.assert_array_equal(dask[:], single[:], err_msg=name)
    spread_metrics = json.loads((project / "models" / spread / "metrics.json").read_text())
    alone_metrics = json.loads((project / "models" / alone / "metrics.json").read_text())
    assert spread_metrics.pop("agreement")["kappa"] == 1.0 and alone_metrics.pop("agreement") is None
    assert spread_metrics == alone_metrics


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_store_outside_the_project_serves_every_command(tmp_path, tiny_model):
    project = image_project(tmp_path, 20, tiny_model)
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["storage"] = {"features": "../elsewhere/features.zarr"}
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    cli = Cli(project)
    assert json.loads(cli("extract", "--json").stdout)["done"] == 20
    assert not (project / "features.zarr").exists()
    assert zarr.open_group(str(tmp_path / "elsewhere" / "features.zarr"), mode="r")["status"][:].tolist() == [DONE] * 20
    assert "features    20 done, 0 failed, 0 pending  (tiny.keras)" in cli("status").stdout
    other = tmp_path / "other.keras"
    other.write_bytes(tiny_model.read_bytes())  # the same weights under another name: another extractor
    refused = cli("extract", "--model", str(other), expect=1)
    assert "../elsewhere/features.zarr holds features from 'tiny.keras'" in refused.stderr
    cli("extract", "--model", str(other), "--overwrite")
    assert "features    20 done, 0 failed, 0 pending  (other.keras)" in cli("status").stdout


@pytest.mark.slow
@pytest.mark.tensorflow
def test_an_fsspec_url_store(tmp_path):
    """memory:// goes through zarr's FsspecStore as s3:// would (one process: the memory is this process's)."""
    project, _ = feature_project(tmp_path)
    config = yaml.safe_load((project / "patchwork.yaml").read_text())
    config["storage"] = {"features": f"memory://{tmp_path.name}/features.zarr"}
    (project / "patchwork.yaml").write_text(yaml.safe_dump(config))
    cli = Cli(project)
    assert "features    not extracted yet" in cli("status").stdout
    assert "features not extracted yet" in cli("train", expect=1).stderr
    cli("extract", "--from-npy", "features.npy")
    assert "features    120 done, 0 failed, 0 pending  (npy:features.npy)" in cli("status").stdout
    run_id = json.loads(cli("train", "--json").stdout)["run_id"]
    predictions = zarr.open_array(str(project / "models" / run_id / "predictions.zarr"), mode="r")[:]
    assert predictions.shape == (120, 2) and np.isfinite(predictions).all()


def test_bad_storage_settings_are_clear_errors(tmp_path, project_dir):
    config_path = project_dir / "patchwork.yaml"
    config = yaml.safe_load(config_path.read_text())
    for value, message in (
        ("", "storage.features: expected a path or URL, got ''"),
        ("file://host/x.zarr", "storage.features: a file URL needs an absolute path"),
        (3, "storage.features: expected a string, got 3"),
    ):
        config_path.write_text(yaml.safe_dump({**config, "storage": {"features": value}}))
        assert message in Cli(project_dir)("status", expect=1).stderr


@pytest.mark.slow
def test_dask_option_errors_change_nothing(tmp_path, project_dir, monkeypatch):
    cli = Cli(project_dir)
    assert "--workers: only with --dask local" in cli("extract", "--workers", "2", expect=1).stderr
    assert "only with --dask local" in cli("train", "--dask", "tcp://127.0.0.1:1", "--workers", "2", expect=1).stderr
    assert (
        "--workers: expected at least 1, got 0" in cli("extract", "--dask", "local", "--workers", "0", expect=1).stderr
    )
    np.save(project_dir / "f.npy", np.zeros((12, 4), np.float32))
    assert "not with --from-npy" in cli("extract", "--dask", "local", "--from-npy", "f.npy", expect=1).stderr
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = cli("extract", "--dask", "tcp://127.0.0.1:9", expect=1)
    assert "error: --dask tcp://127.0.0.1:9: no Dask scheduler answered there" in result.stderr
    for module in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)
    result = cli("train", "--dask", "local", expect=1)
    assert "--dask needs Dask, which is not installed: pip install 'patchwork-cli[dask]'" in result.stderr
    assert not (project_dir / "features.zarr").exists() and not (project_dir / "models").exists()


@pytest.mark.slow
def test_extract_without_dask_never_imports_it(tmp_path, tiny_model):
    project = image_project(tmp_path, 3, tiny_model)
    script = (
        "import sys\n"
        "from patchwork_cli.cli.app import app\n"
        "try:\n"
        "    app(['extract'], standalone_mode=False)\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "extracted 3 image(s)" in done.stderr
