"""patchwork init / patchwork add: start a project, and grow it as images arrive."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from patchwork_cli.cli.common import ProjectOption, open_from, report_added, say
from patchwork_cli.store.tasks import MULTICLASS, MULTILABEL, TASKS

IMAGES_HELP = "A text file with one image path per line, a directory (scanned recursively), or - for stdin."
# --task's choices: the tasks of store/tasks.py, as the enum typer lists in the help text
Task = enum.Enum("Task", {name: name for name in TASKS}, type=str)


def init(
    directory: Path = typer.Argument(..., help="The project directory to create."),
    images: str | None = typer.Option(None, "--images", "-i", help=IMAGES_HELP),
    classes: str | None = typer.Option(None, "--classes", "-c", help="Comma-separated class names, e.g. cat,dog."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Start from an existing label table (original patchwork CSV format)."
    ),
    task: Task | None = typer.Option(
        None,
        "--task",
        help="multilabel (default): classes independent; multiclass: exactly one class per image (a softmax).",
    ),
    classes_from_folders: bool = typer.Option(
        False,
        "--classes-from-folders",
        help="--images is a folder with one sub-directory per class: a multiclass project, "
        "each image labelled by its folder.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Start over in an existing project; its old files move to .replaced/<time>/."
    ),
):
    """Create a project from image paths and/or an existing label table, or from a folder of class folders."""
    from patchwork_cli.errors import PatchworkError
    from patchwork_cli.store.project import init_from_folders, init_project
    from patchwork_cli.store.sources import read_image_source

    if classes_from_folders:
        given = {"--classes": classes, "--labels": labels, "--task multilabel": task if task == MULTILABEL else None}
        conflicts = [option for option, value in given.items() if value is not None]
        if conflicts:
            raise PatchworkError(
                f"--classes-from-folders makes a multiclass project labelled by folder: drop {conflicts[0]}"
            )
        if images is None or images == "-":
            raise PatchworkError("--classes-from-folders needs --images FOLDER (one sub-directory per class)")
        project, result = init_from_folders(directory, images, force=force)
    else:
        paths = read_image_source(images) if images is not None else []
        class_list = [c.strip() for c in classes.split(",")] if classes is not None else None
        task_name = task.value if task is not None else MULTILABEL
        project, result = init_project(
            directory, images=paths, classes=class_list, labels=labels, force=force, task=task_name
        )
    report_added(result)
    kind = " (multiclass: one class per image)" if project.config.task == MULTICLASS else ""
    say(f"initialised {project.directory}: {len(project.labels())} images, classes {', '.join(project.classes)}{kind}")


def add(
    ctx: typer.Context,
    images: str = typer.Argument(..., help=IMAGES_HELP),
    subset: str | None = typer.Option(None, "--subset", help="Tag the new images with this subset value."),
    project: ProjectOption = None,
):
    """Append new images to the project; paths it already has are skipped."""
    from patchwork_cli.store.sources import read_image_source

    paths = read_image_source(images)
    opened = open_from(ctx, project)
    result = opened.add_images(paths, subset=subset)
    report_added(result)
    say(f"added {result.added} image(s); {result.known} already in the project")
