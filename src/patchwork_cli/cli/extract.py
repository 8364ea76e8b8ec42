"""patchwork extract: images to the feature store (features.zarr)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from patchwork_cli.cli.common import (
    DaskOption,
    JsonOption,
    ProjectOption,
    WorkersOption,
    dask_client,
    dask_cluster,
    open_from,
    say,
)


def extract(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None, "--model", help="Extractor: efficientnet_lite0, keras:NAME or a .keras/.h5 path (default: the config's)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: only shard K of N (every N-th chunk), for N parallel processes or hosts."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a feature store made by a different extractor."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any image failed."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try the images that failed before again."),
    from_npy: Path | None = typer.Option(
        None, "--from-npy", help="Import pre-extracted features: a .npy with one row per labels.csv row, in order."
    ),
    dask: DaskOption = None,
    workers: WorkersOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
):
    """Run every pending image through the feature extractor into features.zarr."""
    from patchwork_cli.errors import PatchworkError
    from patchwork_cli.extraction.extract import extract as run_extract
    from patchwork_cli.extraction.extract import parse_shard
    from patchwork_cli.extraction.npy_import import import_npy

    cluster = dask_cluster(dask, workers)
    opened = open_from(ctx, project)
    if from_npy is not None:
        if cluster is not None:
            raise PatchworkError("--dask: not with --from-npy, which copies an array in this process")
        report = import_npy(opened, from_npy, overwrite=overwrite)
    else:
        shard_k_n = parse_shard(shard)
        with dask_client(cluster, opened) as client:
            report = run_extract(
                opened, model=model, shard=shard_k_n, overwrite=overwrite, retry_failed=retry_failed, client=client
            )
    summary = report.as_dict()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    if from_npy is not None:  # no extractor ran: the rows were copied
        done = f"imported {summary['processed']} feature row(s) from {from_npy}"
    else:
        done = (
            f"extracted {summary['processed']} image(s) with {summary['extractor']} on {summary['runtime']} "
            f"({summary['precision'].split(':')[0]})"
        )
    say(
        f"{done} in {summary['seconds']:.1f} s ({summary['images_per_second']:.1f} "
        f"{'rows' if from_npy is not None else 'img'}/s); store: {summary['done']} done, "
        f"{summary['failed']} failed, {summary['pending']} pending"
    )
    if summary["note"]:
        say(f"note: {summary['note']}")
    if summary.get("changed"):
        from patchwork_cli.store.changed_images import CHANGED_NAME

        review = (
            f"; {summary['to_review']} labelled, their labels kept: review them with "
            f"'patchwork label --paths {CHANGED_NAME}'"
            if summary["to_review"]
            else ""
        )
        say(f"{summary['changed']} image(s) had changed since extraction and were extracted again{review}")
    if summary["failed"]:
        say(f"warning: {summary['failed']} image(s) failed; reasons in features_failures.csv")
        if strict:
            raise typer.Exit(1)
