"""patchwork status: what the project holds."""

from __future__ import annotations

import json

import typer

from .common import JsonOption, ProjectOption, open_from


def status(ctx: typer.Context, project: ProjectOption = None, as_json: JsonOption = False):
    """Images, labelling progress and per-class label counts."""
    from ..status import format_summary, label_summary

    opened = open_from(ctx, project)
    summary = label_summary(opened.labels(), opened.classes)
    if as_json:
        typer.echo(json.dumps({"project": str(opened.directory), **summary}, indent=2))
    else:
        typer.echo(format_summary(str(opened.directory), summary))
