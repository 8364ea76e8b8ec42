"""patchwork label: record labels (today from a CSV; the interactive window is a later step)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ProjectOption, open_from, say


def label(
    ctx: typer.Context,
    import_file: Path | None = typer.Option(
        None,
        "--import",
        help="Apply label edits from a CSV with a filepath column and any of the class columns, "
        "exclude, validation, subset. Empty cells leave a value as it is.",
    ),
    project: ProjectOption = None,
):
    """Label images."""
    if import_file is None:
        raise typer.BadParameter("the interactive labelling window is not available yet; give --import FILE")
    opened = open_from(ctx, project)
    count = opened.import_labels(import_file)
    say(f"imported {count} label edit(s) from {import_file}")
