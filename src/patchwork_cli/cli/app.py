"""The `patchwork` executable: the typer app, global options and error handling."""

from __future__ import annotations

import logging

import typer
from typer.core import TyperGroup

from patchwork_cli import __version__
from patchwork_cli.cli import (
    classes,
    duplicates,
    evaluate,
    export,
    extract,
    init,
    label,
    predict,
    pretrain,
    sample,
    status,
    train,
)
from patchwork_cli.cli.common import ProjectOption
from patchwork_cli.errors import PatchworkError


class _PatchworkGroup(TyperGroup):
    """Turns a PatchworkError (bad data, config or state) into one line on stderr and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (PatchworkError, OSError) as error:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"error: {_describe(error)}", err=True)
            raise typer.Exit(1) from None


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


class _StderrHandler(logging.Handler):
    """Core warnings to stderr; looks sys.stderr up at emit time (CliRunner swaps it)."""

    def emit(self, record):
        typer.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


app = typer.Typer(
    cls=_PatchworkGroup,
    name="patchwork",
    help="Build image classifiers with active learning: label less, learn more.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        typer.echo(f"patchwork {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    project: ProjectOption = None,
    debug: bool = typer.Option(False, "--debug", envvar="PATCHWORK_DEBUG", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    logger = logging.getLogger("patchwork")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


app.command("init")(init.init)
app.command("add")(init.add)
app.command("extract")(extract.extract)
app.command("train")(train.train)
app.command("pretrain")(pretrain.pretrain)
app.command("evaluate")(evaluate.evaluate)
app.command("export")(export.export)
app.command("predict")(predict.predict)
app.command("status")(status.status)
app.command("label")(label.label)
app.command("sample", epilog=sample.EPILOG)(sample.sample)
app.command("duplicates")(duplicates.duplicates)
app.add_typer(classes.app, name="classes")


def main():
    app(prog_name="patchwork")
