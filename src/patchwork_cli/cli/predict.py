"""patchwork predict: class probabilities for images, as CSV on stdout."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import typer

from patchwork_cli.cli.common import ProjectOption, open_from, say


def predict(
    ctx: typer.Context,
    images: list[str] | None = typer.Argument(None, help="Image files, or directories (scanned for images)."),
    listed: str | None = typer.Option(
        None, "--images", help="A text file with one image path per line, a directory, or - for stdin."
    ),
    run: str | None = typer.Option(None, "--run", help="The project's run to use (default: LATEST)."),
    model: Path | None = typer.Option(
        None, "--model", help="An exported directory (patchwork export) to use instead of a project's run."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per model call."),
    project: ProjectOption = None,
):
    """Probabilities per class for each image: CSV (filepath, one column per class) on stdout.

    Unreadable images get a row with empty cells and a warning on stderr.
    """
    from patchwork_cli.deploy.export import PATH_COLUMN, PROBABILITY_FORMAT
    from patchwork_cli.deploy.predict import exported_predictor, image_paths, run_predictor
    from patchwork_cli.deploy.predict import predict as run_predict

    if model is not None and run is not None:
        raise typer.BadParameter("give --run (a project's run) or --model (an exported directory), not both")
    paths = image_paths(images or [], listed)
    if not paths:
        raise typer.BadParameter("no images: give image files or directories, or --images FILE|-")
    predictor = (
        exported_predictor(model, batch_size=batch_size)
        if model is not None
        else run_predictor(open_from(ctx, project), run_id=run, batch_size=batch_size)
    )
    if predictor.note:
        say(f"note: {predictor.note}")
    classes = predictor.classes
    writer = csv.writer(sys.stdout, lineterminator="\n")
    failed = 0
    try:
        writer.writerow([PATH_COLUMN, *classes])
        for result in run_predict(predictor, paths):
            if result.probabilities is None:
                failed += 1
                say(f"warning: {result.path}: {result.error}")
                writer.writerow([result.path, *[""] * len(classes)])
            else:
                writer.writerow([result.path, *(PROBABILITY_FORMAT % p for p in result.probabilities)])
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, with the shell's code for a closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None
    unreadable = f"; {failed} unreadable (empty rows)" if failed else ""
    say(f"predicted {len(paths) - failed} image(s){unreadable} ({predictor.runs_on})")
