"""Reaching a Dask cluster: the --dask and --workers options, a LocalCluster, or a scheduler over TLS.

Imported only when a command is given --dask, and Dask is imported only inside it, so the
base install never needs Dask. The command's own process coordinates: it prepares the
store and picks the chunks exactly as a single-process run does, then hands its chunk tasks
to tasks.run_chunk_tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import itertools
import logging
import os
import socket
import ssl
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.project import Project

log = logging.getLogger("patchwork")
INSTALL_HINT = "pip install 'patchwork-cli[dask]'"


@dataclass(frozen=True)
class ClusterSpec:
    """Where the tasks run: `local` (a LocalCluster of `workers` processes) or a scheduler address."""

    address: str
    workers: int | None = None


def cluster_spec(address: str | None, workers: int | None) -> ClusterSpec | None:
    """The --dask and --workers options, checked; None without --dask."""
    if address is None:
        if workers is not None:
            raise PatchworkError("--workers: only with --dask local")
        return None
    if workers is not None and address != "local":
        raise PatchworkError(f"--workers: only with --dask local; the cluster at {address} has the workers it has")
    if workers is not None and workers < 1:
        raise PatchworkError(f"--workers: expected at least 1, got {workers}")
    try:
        import dask.distributed  # noqa: F401  (checked now, before any work is done)
    except ImportError:
        raise PatchworkError(f"--dask needs Dask, which is not installed: {INSTALL_HINT}") from None
    return ClusterSpec(address, workers)


@contextlib.contextmanager
def connect(spec: ClusterSpec, project: Project) -> Iterator:
    """A dask.distributed Client for `spec`; a LocalCluster is started here and stopped after.
    A scheduler is reached with the TLS files of `project`'s dask: section, else with Dask's own
    configuration."""
    if spec.address == "local":
        with _local_client(spec.workers) as client:
            yield client
        return
    with _scheduler_client(spec.address, project) as client:
        yield client


def _scheduler_client(address: str, project: Project):
    """A Client (itself a context manager) of the scheduler at `address`, or one clear error."""
    from dask.distributed import Client

    security = _security(address, project)
    if is_plain_tcp_beyond_this_host(address):
        log.warning(
            "--dask %s is plain TCP to another host: anyone who can reach that port can run code on every worker, "
            "with access to the feature store; use a TLS scheduler (--dask tls://..., see 'Scaling out' in the README)",
            address,
        )
    try:
        return Client(address, security=security)  # gives up after distributed.comm.timeouts.connect (30 s)
    except (OSError, ValueError) as error:
        raise PatchworkError(_connection_failure(address, error)) from None


def _connection_failure(address: str, error: Exception) -> str:
    from distributed.comm import parse_address
    from distributed.comm.core import CommClosedError

    # A scheduler that refuses a certificate (or whose certificate is refused) closes the connection
    # during or right after the TLS handshake; nothing else closes a fresh tls:// connection.
    if isinstance(error, CommClosedError) and parse_address(address)[0] == "tls":
        return (
            f"--dask {address}: the TLS handshake with the scheduler failed ({error}); the scheduler's certificate "
            "and this client's must be signed by the same certificate authority"
        )
    return f"--dask {address}: no Dask scheduler answered there ({error})"


@contextlib.contextmanager
def _local_client(workers: int | None) -> Iterator:
    from dask.distributed import Client, LocalCluster

    # One Dask thread per worker process, running one task at a time, and the cores shared out
    # between the workers' TensorFlow thread pools rather than each pool sized for all of them.
    # (Features do not depend on the count: EfficientNet-Lite0 gives the same bits on 1 or 2.)
    workers = workers or os.cpu_count() or 1
    tensorflow_threads = str(max(1, (os.cpu_count() or 1) // workers))
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            env={"TF_NUM_INTRAOP_THREADS": tensorflow_threads},
            processes=True,
            # loopback only: a cluster runs whatever a client sends it, so no one else may reach it
            host="127.0.0.1",
            dashboard_address=None,
            # the cluster's own chatter (a TensorFlow worker outliving its 4 s to close, ...) is not
            # the user's business; its errors are
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# --- who may connect: TLS, and a warning for plain TCP ------------------------------------------

# The dask: keys of patchwork.yaml, and the argument of distributed.Security each one sets.
_SECURITY_ARGUMENTS = {"tls_ca_file": "tls_ca_file", "tls_cert": "tls_client_cert", "tls_key": "tls_client_key"}
# Dask's own configuration of a client's TLS files (DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ...).
_DASK_CA_FILE, _DASK_CERT, _DASK_KEY = (
    "distributed.comm.tls.ca-file",
    "distributed.comm.tls.client.cert",
    "distributed.comm.tls.client.key",
)
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _security(address: str, project: Project):
    """The distributed.Security of a client of the scheduler at `address`: from the project's dask:
    section when it names TLS files, else None, for Dask's own configuration to apply. Clear errors
    for a missing or unreadable file and for TLS without any certificate configured."""
    from distributed import Security
    from distributed.comm import parse_address

    scheme = parse_address(address)[0]
    files = _project_tls_files(project)
    if files is None:
        if scheme == "tls":
            _check_dask_tls_configuration(address)
        return None
    if scheme != "tls":
        raise PatchworkError(
            f"--dask {address}: {project.config_path.name} names TLS certificates (dask:), "
            "so the scheduler is reached over tls://HOST:PORT"
        )
    security = Security(require_encryption=True, **files)
    try:
        security.get_connection_args("client")  # loads the files now, to name them if they are no certificate
    except ssl.SSLError as error:
        raise PatchworkError(
            f"{project.config_path}: dask: could not load the CA file, certificate and key ({error})"
        ) from None
    return security


def _project_tls_files(project: Project) -> dict[str, str] | None:
    """The TLS files of the project's dask: section as distributed.Security arguments, resolved
    against the project directory and checked to exist; None when the section names none."""
    named = {key: value for key, value in dataclasses.asdict(project.config.dask).items() if value is not None}
    if not named:
        return None
    files = {}
    for key, value in named.items():
        path = project.directory / Path(value).expanduser()
        _check_file(path, f"{project.config_path}: dask.{key}")
        files[_SECURITY_ARGUMENTS[key]] = str(path)
    return files


def _check_dask_tls_configuration(address: str) -> None:
    """Dask's configuration names a client's TLS files, and those files exist."""
    import dask

    if dask.config.get("distributed.client.security-loader", None):
        return  # a function of the user's makes the Security
    needed = (("CA file", _DASK_CA_FILE), ("certificate", _DASK_CERT))
    missing = [what for what, key in needed if not dask.config.get(key)]
    if missing:
        raise PatchworkError(
            f"--dask {address}: TLS needs a certificate, and no {' and no '.join(missing)} is configured: "
            "name them in patchwork.yaml (dask: tls_ca_file, tls_cert, tls_key) or in Dask's configuration "
            "(DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and __KEY)"
        )
    for key in (_DASK_CA_FILE, _DASK_CERT, _DASK_KEY):
        value = dask.config.get(key)
        if value and "\n" not in value:  # (Dask also takes the PEM text itself)
            _check_file(Path(value), f"{key} (Dask configuration)")


def _check_file(path: Path, named_by: str) -> None:
    if not path.is_file():
        raise PatchworkError(f"{named_by}: {path} {'is not a file' if path.exists() else 'does not exist'}")


def is_plain_tcp_beyond_this_host(address: str) -> bool:
    """Whether `address` is an unencrypted tcp:// scheduler address of another machine."""
    from distributed.comm import get_address_host, parse_address

    if parse_address(address)[0] != "tcp":
        return False
    try:
        host = get_address_host(address)
    except ValueError:
        return False  # not an address at all: connecting says so
    own = _own_addresses()
    if is_this_host(host, own):
        return False
    # another name of this host (an alias, its full domain name) stands for this host's addresses
    resolved = _resolve(host)
    return not resolved or not all(is_this_host(ip, own) for ip in resolved)


def is_this_host(host: str, own_addresses: Collection[str]) -> bool:
    """Whether `host` (a name or an IP address) is this machine: localhost, a loopback address, or
    one of `own_addresses` (its name and the addresses of its network interfaces, lower case)."""
    host = host.lower()
    if host == "localhost" or host in own_addresses:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False


def _own_addresses() -> set[str]:
    import psutil  # a dependency of distributed

    interfaces = psutil.net_if_addrs().values()
    ips = {entry.address.lower() for entry in itertools.chain(*interfaces) if entry.family in _IP_FAMILIES}
    return ips | {socket.gethostname().lower()}


def _resolve(host: str) -> set[str]:
    """The IP addresses `host` stands for (none when it does not resolve)."""
    try:
        return {info[4][0].lower() for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return set()
