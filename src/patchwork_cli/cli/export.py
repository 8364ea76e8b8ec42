"""patchwork export: a deployable model, the labels and the predictions, into one directory."""

from __future__ import annotations

from pathlib import Path

import typer

from patchwork_cli.cli.common import ProjectOption, open_from, say


def export(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="The directory to export into (created if needed)."),
    run: str | None = typer.Option(None, "--run", help="The run to export (default: LATEST)."),
    what: str = typer.Option(
        "model,labels,predictions", "--what", help="Comma-separated parts: model, labels, predictions."
    ),
    force: bool = typer.Option(False, "--force", help="Write into a directory that is not empty."),
    project: ProjectOption = None,
):
    """Export the model (.keras, SavedModel, model card), labels.csv and predictions.csv; prints the paths."""
    from patchwork_cli.deploy.export import export as run_export
    from patchwork_cli.deploy.export import parse_parts

    parts = parse_parts(what)
    written, warnings = run_export(open_from(ctx, project), out=out, run_id=run, parts=parts, force=force)
    for path in written:
        typer.echo(str(path))
    for warning in warnings:
        say(f"warning: {warning}")
    say(f"exported {', '.join(parts)} to {out}")
