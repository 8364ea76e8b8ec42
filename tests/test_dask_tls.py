"""--dask tls://: a real TLS cluster on this machine, its certificates made by the README's own
openssl commands; the project's dask: section and Dask's own configuration; a client without
the cluster's certificate refused; the warning for plain tcp:// to another host."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from builders import Cli, assert_same_store, image_project, snapshot, store

from patchwork_cli.distributed.cluster import ClusterSpec, connect, is_plain_tcp_beyond_this_host, is_this_host
from patchwork_cli.store.config import Config, DaskConfig
from patchwork_cli.store.project import open_project
from patchwork_cli.training.fingerprint import fingerprint

distributed = pytest.importorskip("distributed")
README = Path(__file__).resolve().parents[1] / "README.md"
ROWS = 300  # two chunks of the tiny model's 256-row chunks


def _readme_certificate_commands() -> list[list[str]]:
    """The openssl commands of the README's code block that makes the cluster's certificates."""
    lines = README.read_text().splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("openssl req -x509"))
    return [shlex.split(line) for line in lines[start : lines.index("```", start)] if line.startswith("openssl ")]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """ca.pem, dask.pem and dask.key as the README makes them, and a stranger's self-signed pair."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):  # .ci/run installs it: the acceptance test of TLS must run there
            pytest.fail("needs the openssl command")
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("certificates")
    stranger = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=stranger -keyout stranger.key"
    for command in [*_readme_certificate_commands(), [*shlex.split(stranger), "-out", "stranger.pem"]]:
        subprocess.run(command, cwd=directory, check=True, capture_output=True, timeout=60)
    return directory


@pytest.fixture(scope="module")
def tls_cluster(certificates):
    """A scheduler and one worker that speak only TLS and take only certificates of the README's CA.
    (The worker is a thread of this process: TensorFlow is already loaded here, and the other Dask
    tests cover worker processes.)"""
    pairs = {}
    for role in ("scheduler", "worker", "client"):
        pairs[f"tls_{role}_cert"] = str(certificates / "dask.pem")
        pairs[f"tls_{role}_key"] = str(certificates / "dask.key")
    security = distributed.Security(require_encryption=True, tls_ca_file=str(certificates / "ca.pem"), **pairs)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tls://",
        host="127.0.0.1",
        security=security,
        dashboard_address=None,
    ) as cluster:
        yield cluster.scheduler_address


def _with_dask_section(project: Path, **section) -> Path:
    config_path = project / "patchwork.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["dask"] = section
    config_path.write_text(yaml.safe_dump(config))
    return project


def _project_with_certificates(root: Path, certificates: Path, model: Path, cert: str = "dask") -> Path:
    """A project over ROWS images whose dask: section names copies of the certificates in certs/."""
    project = image_project(root, ROWS, model, name="tls")
    (project / "certs").mkdir()
    for name in ("ca.pem", f"{cert}.pem", f"{cert}.key"):
        shutil.copy(certificates / name, project / "certs" / name)
    return _with_dask_section(
        project, tls_ca_file="certs/ca.pem", tls_cert=f"certs/{cert}.pem", tls_key=f"certs/{cert}.key"
    )


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.dask
def test_extract_over_tls_gets_the_single_process_features(tmp_path, certificates, tls_cluster, tiny_model):
    alone = image_project(tmp_path, ROWS, tiny_model, name="alone")
    Cli(alone)("extract")
    project = _project_with_certificates(tmp_path, certificates, tiny_model)
    result = Cli(project)("extract", "--dask", tls_cluster, "--json")
    assert json.loads(result.stdout)["done"] == ROWS
    assert "warning" not in result.stderr
    assert_same_store(store(project), store(alone))


@pytest.mark.tensorflow
@pytest.mark.dask
def test_dask_configuration_names_the_certificates_when_the_project_does_not(
    tmp_path,
    certificates,
    tls_cluster,
    tiny_model,
    monkeypatch,
):
    import dask

    project = image_project(tmp_path, 20, tiny_model)
    for variable, name in (("CA_FILE", "ca.pem"), ("CLIENT__CERT", "dask.pem"), ("CLIENT__KEY", "dask.key")):
        monkeypatch.setenv(f"DASK_DISTRIBUTED__COMM__TLS__{variable}", str(certificates / name))
    dask.config.refresh()
    try:
        assert json.loads(Cli(project)("extract", "--dask", tls_cluster, "--json").stdout)["done"] == 20
        monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", str(tmp_path / "gone.key"))
        dask.config.refresh()
        refused = Cli(project)("extract", "--dask", tls_cluster, expect=1).stderr
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    assert (
        f"error: distributed.comm.tls.client.key (Dask configuration): {tmp_path / 'gone.key'} does not exist"
        in refused
    )


@pytest.mark.dask
def test_the_scheduler_refuses_a_client_without_the_clusters_certificate(certificates, tls_cluster, caplog):
    host, port = tls_cluster.removeprefix("tls://").rsplit(":", 1)
    trusting = ssl.create_default_context(cafile=str(certificates / "ca.pem"))  # trusts the scheduler, shows nothing
    trusting.check_hostname = False
    with caplog.at_level(logging.WARNING, logger="distributed.comm.tcp"):
        with socket.create_connection((host, int(port)), timeout=10) as raw, trusting.wrap_socket(raw) as tls:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                tls.sendall(b"hello")
                tls.recv(1)  # TLS 1.3: the scheduler's verdict on the missing client certificate arrives here
        deadline = time.monotonic() + 10  # the scheduler logs it from its own thread
        while "peer did not return a certificate" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "TLS handshake failed" in caplog.text and "peer did not return a certificate" in caplog.text


@pytest.mark.dask
def test_patchwork_with_a_strangers_certificate_is_refused_and_changes_nothing(
    tmp_path,
    certificates,
    tls_cluster,
    tiny_model,
):
    project = _project_with_certificates(tmp_path, certificates, tiny_model, cert="stranger")
    before = snapshot(project)
    result = Cli(project)("extract", "--dask", tls_cluster, expect=1)
    assert f"error: --dask {tls_cluster}: the TLS handshake with the scheduler failed" in result.stderr
    assert "signed by the same certificate authority" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and snapshot(project) == before


@pytest.mark.tensorflow
def test_tls_settings_that_cannot_work_are_one_line_errors_that_change_nothing(tmp_path, certificates, tiny_model):
    project = _project_with_certificates(tmp_path, certificates, tiny_model)
    config_path = project / "patchwork.yaml"
    (project / "certs" / "garbled.pem").write_text("not a certificate\n")
    cases = [
        (
            {"tls_key": "certs/missing.key"},
            "tls://127.0.0.1:8786",
            f"error: {config_path}: dask.tls_key: {project / 'certs' / 'missing.key'} does not exist",
        ),
        (
            {"tls_ca_file": "certs"},
            "tls://127.0.0.1:8786",
            f"error: {config_path}: dask.tls_ca_file: {project / 'certs'} is not a file",
        ),
        (
            {"tls_cert": "certs/garbled.pem"},
            "tls://127.0.0.1:8786",
            f"error: {config_path}: dask: could not load the CA file, certificate and key",
        ),
        (
            {},
            "tcp://127.0.0.1:8786",
            "error: --dask tcp://127.0.0.1:8786: patchwork.yaml names TLS certificates (dask:), so the scheduler is "
            "reached over tls://HOST:PORT",
        ),
    ]
    section = yaml.safe_load(config_path.read_text())["dask"]
    for change, address, message in cases:
        _with_dask_section(project, **{**section, **change})
        before = snapshot(project)
        stderr = Cli(project)("extract", "--dask", address, expect=1).stderr
        assert stderr.startswith(message), stderr
        assert len(stderr.strip().splitlines()) == 1 and snapshot(project) == before
    _with_dask_section(project)
    stderr = Cli(project)("extract", "--dask", "tls://127.0.0.1:8786", expect=1).stderr
    assert "error: --dask tls://127.0.0.1:8786: TLS needs a certificate, and no CA file and no certificate" in stderr
    assert "dask: tls_ca_file, tls_cert, tls_key" in stderr and "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "text, message",
    [
        ("dask: {tls_cert: c.pem}", "dask.tls_ca_file: needed with dask.tls_cert"),
        ("dask: {tls_ca_file: ca.pem, tls_key: k.pem}", "dask.tls_cert: needed with dask.tls_ca_file"),
        ("dask: {tls_ca_file: 3}", "dask.tls_ca_file: expected a string, got 3"),
        ("dask: {tls_ca_file: ' ', tls_cert: c.pem}", "dask.tls_ca_file: expected a file path, got ' '"),
        ("dask: {tls_certificate: c.pem}", "unknown key 'dask.tls_certificate' (did you mean 'dask.tls_cert'?)"),
    ],
)
def test_a_bad_dask_section_is_a_config_error(project_dir, text, message):
    config_path = project_dir / "patchwork.yaml"
    config_path.write_text(config_path.read_text() + "\n" + text + "\n")
    assert f"error: {config_path}: {message}" in Cli(project_dir)("status", expect=1).stderr


def test_the_dask_section_is_not_part_of_what_a_run_depends_on(project_dir):
    table = open_project(project_dir).labels()
    config = Config(classes=["cat", "dog", "bird"])
    with_tls = dataclasses.replace(config, dask=DaskConfig(tls_ca_file="ca.pem", tls_cert="c.pem"))
    assert fingerprint(table, with_tls, None) == fingerprint(table, config, None)


@pytest.mark.parametrize(
    "host, own, expected",
    [
        ("127.0.0.1", set(), True),
        ("127.0.1.1", set(), True),  # Debian's /etc/hosts name for this host
        ("::1", set(), True),
        ("localhost", set(), True),
        ("LocalHost", set(), True),
        ("10.1.2.3", {"10.1.2.3", "node7"}, True),
        ("Node7", {"10.1.2.3", "node7"}, True),
        ("10.1.2.4", {"10.1.2.3", "node7"}, False),
        ("sched", {"10.1.2.3", "node7"}, False),
        ("fe80::1%eth0", {"fe80::1%eth0"}, True),
        ("2001:db8::5", {"fe80::1%eth0"}, False),
    ],
)
def test_which_hosts_are_this_host(host, own, expected):
    assert is_this_host(host, own) is expected


def test_which_addresses_are_plain_tcp_beyond_this_host():
    assert is_plain_tcp_beyond_this_host("tcp://203.0.113.7:8786")  # TEST-NET-3: never this host
    assert is_plain_tcp_beyond_this_host("203.0.113.7:8786")  # a bare address is tcp (Dask's default scheme)
    this_host = ["127.0.0.1", "[::1]", "localhost", socket.gethostname(), *_interface_ipv4_addresses()]
    for address in ["tls://203.0.113.7:8786", *(f"tcp://{host}:8786" for host in this_host)]:
        assert not is_plain_tcp_beyond_this_host(address), address


def _interface_ipv4_addresses() -> list[str]:
    import psutil

    interfaces = psutil.net_if_addrs().values()
    return [entry.address for entries in interfaces for entry in entries if entry.family == socket.AF_INET]


def test_plain_tcp_to_another_host_warns_and_to_this_host_does_not(project_dir, monkeypatch):
    import dask.distributed

    def no_scheduler(address, security=None):
        raise OSError("no scheduler in this test")

    monkeypatch.setattr(dask.distributed, "Client", no_scheduler)
    remote = Cli(project_dir)("extract", "--dask", "tcp://203.0.113.7:8786", expect=1).stderr.splitlines()
    assert remote[0] == (
        "warning: --dask tcp://203.0.113.7:8786 is plain TCP to another host: anyone who can reach that port can run "
        "code on every worker, with access to the feature store; use a TLS scheduler (--dask tls://..., see "
        "'Scaling out' in the README)"
    )
    assert remote[1].startswith("error: --dask tcp://203.0.113.7:8786: no Dask scheduler answered there")
    local = Cli(project_dir)("extract", "--dask", "tcp://127.0.0.1:8786", expect=1).stderr
    assert "warning" not in local and "no Dask scheduler answered there" in local


@pytest.mark.dask
def test_dask_local_listens_on_127_0_0_1_only(project_dir):
    """Scheduler, its HTTP server, nanny and worker: every socket the cluster listens on is loopback."""
    import psutil

    with connect(ClusterSpec("local", workers=1), open_project(project_dir)) as client:
        assert client.scheduler_info()["address"].startswith("tcp://127.0.0.1:")
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = [
            connection.laddr.ip
            for process in processes
            for connection in process.net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN
        ]
    assert len(listening) >= 4 and set(listening) == {"127.0.0.1"}, listening
