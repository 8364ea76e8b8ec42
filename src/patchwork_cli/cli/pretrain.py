"""patchwork pretrain: adapt the extractor to the project's images, without labels (SimCLR)."""

from __future__ import annotations

import json

import typer

from patchwork_cli.cli.common import JsonOption, ProjectOption, open_from, say


def pretrain(
    ctx: typer.Context,
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs over the images (default: pretrain.epochs)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Images per step, at least 2 (default: pretrain.batch_size)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Side of the square training views, at least 32 (default: pretrain.image_size)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="NT-Xent temperature (default: pretrain.temperature)."
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue the newest unfinished pretrain with the same settings."
    ),
    project: ProjectOption = None,
    as_json: JsonOption = False,
):
    """Adapt the extractor to this project's images without labels; prints the new extractor's path.

    Use it with `patchwork extract --model PATH --overwrite`.
    """
    from patchwork_cli.pretraining.pretrain import pretrain as run_pretrain

    opened = open_from(ctx, project)
    overrides = {"epochs": epochs, "batch_size": batch_size, "image_size": image_size, "temperature": temperature}
    report = run_pretrain(opened, overrides=overrides, resume=resume)
    resumed = f" (resumed after epoch {report.resumed_from})" if report.resumed_from else ""
    knn = f", validation 5-NN accuracy {report.knn_accuracy:.3f}" if report.knn_accuracy is not None else ""
    say(
        f"pretrained {report.epochs} epochs{resumed} on {report.images} images in {report.seconds:.1f} s: "
        f"loss {report.last_loss:.4f}{knn}; loss per epoch in {report.directory / 'loss.csv'}"
    )
    say(f"use it: patchwork extract --model {report.extractor_path} --overwrite")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "extractor": str(report.extractor_path),
                    "directory": str(report.directory),
                    "epochs": report.epochs,
                    "resumed_from": report.resumed_from,
                    "images": report.images,
                    "seconds": report.seconds,
                    "grey": report.grey,
                    "loss": report.last_loss,
                    "knn_accuracy": report.knn_accuracy,
                },
                indent=2,
            )
        )
    else:
        typer.echo(str(report.extractor_path))
