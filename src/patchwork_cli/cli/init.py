"""patchwork init / patchwork add: start a project, and grow it as images arrive."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ProjectOption, open_from, report_added, say

IMAGES_HELP = "A text file with one image path per line, a directory (scanned recursively), or - for stdin."


def init(
    directory: Path = typer.Argument(..., help="The project directory to create."),
    images: str | None = typer.Option(None, "--images", "-i", help=IMAGES_HELP),
    classes: str | None = typer.Option(None, "--classes", "-c", help="Comma-separated class names, e.g. cat,dog."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Start from an existing label table (original patchwork CSV format)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Start over in an existing project; its old files move to .replaced/<time>/."
    ),
):
    """Create a project from image paths and/or an existing label table."""
    from ..project import init_project
    from ..sources import read_image_source

    paths = read_image_source(images) if images is not None else []
    class_list = [c.strip() for c in classes.split(",")] if classes is not None else None
    project, result = init_project(directory, images=paths, classes=class_list, labels=labels, force=force)
    report_added(result)
    say(f"initialised {project.directory}: {len(project.labels())} images, classes {', '.join(project.classes)}")


def add(
    ctx: typer.Context,
    images: str = typer.Argument(..., help=IMAGES_HELP),
    subset: str | None = typer.Option(None, "--subset", help="Tag the new images with this subset value."),
    project: ProjectOption = None,
):
    """Append new images to the project; paths it already has are skipped."""
    from ..sources import read_image_source

    paths = read_image_source(images)
    opened = open_from(ctx, project)
    result = opened.add_images(paths, subset=subset)
    report_added(result)
    say(f"added {result.added} image(s); {result.known} already in the project")
