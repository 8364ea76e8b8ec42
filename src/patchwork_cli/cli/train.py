"""patchwork train: fit the head on the labels; a new run in models/."""

from __future__ import annotations

import json

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


def train(
    ctx: typer.Context,
    head: str | None = typer.Option(
        None,
        "--head",
        help="Head spec, e.g. auto (the default: fits the features), pool:avg, mlp:256 or conv:128,p,d,r,128.",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of this run (default: training.seed in patchwork.yaml); the same seed, the same run."
    ),
    if_changed: bool = typer.Option(
        False, "--if-changed", help="Do nothing when labels, config and features are unchanged since LATEST."
    ),
    dask: DaskOption = None,
    workers: WorkersOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
):
    """Train a head on the extracted features and the labels; it becomes models/LATEST."""
    from patchwork_cli.modeling.spec import is_labelprop
    from patchwork_cli.store import runs
    from patchwork_cli.training.fingerprint import is_unchanged
    from patchwork_cli.training.train import train as run_train

    cluster = dask_cluster(dask, workers)
    opened = open_from(ctx, project)
    if if_changed and is_unchanged(opened, head=head, seed=seed):
        latest = runs.latest_run(opened.directory)
        say(f"nothing to do: labels, config and features are unchanged since run {latest}")
        if as_json:
            typer.echo(json.dumps({"skipped": True, "run_id": latest}, indent=2))
        return
    with dask_client(cluster, opened) as client:
        report = run_train(opened, head=head, client=client, seed=seed)
    validation = report.metrics.validation
    auc = validation.macro.roc_auc
    headline = f"validation macro AUC {auc:.3f}" if auc is not None else "no validation labels to score it on"
    accuracy = validation.multiclass.accuracy if validation.multiclass is not None else None
    if accuracy is not None:
        headline += f", accuracy {accuracy:.3f}"
    if is_labelprop(report.head):  # no fit: epochs are conjugate gradient iterations
        done = f"propagated the labels of {report.train_rows} rows in {report.epochs} iterations"
    else:
        done = f"{report.epochs} epochs on {report.train_rows} labelled rows"
    say(
        f"trained run {report.run_id}{_head_chosen(head or opened.config.model.head, report.head)}: {done} "
        f"({report.validation_rows} validation) in {report.seconds:.1f} s; {headline}"
    )
    if as_json:
        typer.echo(json.dumps({"skipped": False, **report.as_dict()}, indent=2))


def _head_chosen(asked: str, used: str) -> str:
    """What `head: auto` chose, for the summary line ("" for a head the person named)."""
    from patchwork_cli.modeling.spec import AUTO, AUTO_ON_MAPS

    if asked.strip() != AUTO:
        return ""
    return f" (head auto: {used}, for {'feature maps' if used == AUTO_ON_MAPS else 'vector features'})"
