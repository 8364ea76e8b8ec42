"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from patchwork_cli.distributed.cluster import ClusterSpec
    from patchwork_cli.store.project import Project

ProjectOption = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-C",
        envvar="PATCHWORK_PROJECT",
        show_envvar=False,
        help="Project directory (default: the nearest parent directory holding patchwork.yaml).",
    ),
]


def open_from(ctx: typer.Context, project: Path | None) -> Project:
    """Open the project named by the command's --project, else the global one, else discover it."""
    from patchwork_cli.store.project import open_project

    return open_project(project or ctx.find_root().params.get("project"))


JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")]

# Running a command's chunks as tasks on a Dask cluster (the optional patchwork-cli[dask] extra).
DaskOption = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Run the chunks on a Dask cluster: a scheduler address (tls://host:8786, tcp://host:8786) or 'local'.",
    ),
]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", help="Worker processes of --dask local (default: one per CPU core).")
]


def dask_cluster(address: str | None, workers: int | None) -> ClusterSpec | None:
    """The checked --dask/--workers options (None without them); Dask's glue is imported only then."""
    if address is None and workers is None:
        return None
    from patchwork_cli.distributed.cluster import cluster_spec

    return cluster_spec(address, workers)


def dask_client(cluster: ClusterSpec | None, project: Project):
    """A context giving a dask.distributed Client for `cluster` (from dask_cluster), or None;
    `project`'s dask: section says how to reach a TLS scheduler."""
    if cluster is None:
        return contextlib.nullcontext()
    from patchwork_cli.distributed.cluster import connect

    return connect(cluster, project)


def say(message: str) -> None:
    """A message for the person (stderr), never mixed into the data on stdout."""
    typer.echo(message, err=True)


def report_added(result) -> None:
    if result.duplicates:
        say(f"warning: {result.duplicates} duplicate path(s) dropped")
    if result.missing:
        say(f"warning: {len(result.missing)} path(s) do not exist (yet), first: {result.missing[0]}")
