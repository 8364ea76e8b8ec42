"""patchwork classes: list and revise the class set without losing a label."""

from __future__ import annotations

import typer

from patchwork_cli.cli.common import ProjectOption, open_from, say

app = typer.Typer(help="List, add or rename classes.", no_args_is_help=True)


@app.command("list")
def list_classes(ctx: typer.Context, project: ProjectOption = None):
    """Print the classes, one per line."""
    for name in open_from(ctx, project).classes:
        typer.echo(name)


@app.command("add")
def add_class(
    ctx: typer.Context, name: str = typer.Argument(..., help="The new class."), project: ProjectOption = None
):
    """Add a class (unlabelled on every image)."""
    open_from(ctx, project).add_class(name)
    say(f"added class {name!r}")


@app.command("rename")
def rename_class(
    ctx: typer.Context,
    old: str = typer.Argument(..., help="The current name."),
    new: str = typer.Argument(..., help="The new name."),
    project: ProjectOption = None,
):
    """Rename a class; its labels move with it."""
    open_from(ctx, project).rename_class(old, new)
    say(f"renamed class {old!r} to {new!r}")
