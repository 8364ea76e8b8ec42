"""patchwork status: what the project holds."""

from __future__ import annotations

import json

import typer

from patchwork_cli.cli.common import JsonOption, ProjectOption, open_from


def status(ctx: typer.Context, project: ProjectOption = None, as_json: JsonOption = False):
    """Images, labelling progress, per-class label counts, extracted features, the latest run,
    groups of copies, and images changed since extraction (with labels to review)."""
    from patchwork_cli.evaluation.status import format_summary, project_status

    summary = project_status(open_from(ctx, project))
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
