"""patchwork sample: which images to look at next, on stdout for pipes."""

from __future__ import annotations

import enum
import json

import typer

from patchwork_cli.cli.common import ProjectOption, open_from, say
from patchwork_cli.sampling import registry  # pure Python: --help loads neither numpy nor pandas

# After the options in `patchwork sample --help` (\b: click keeps the lines as they are).
EPILOG = f"Strategies (C a class):\n\n\b\n{registry.described()}"
# The filters are spelled out here, not imported, so that --help loads neither numpy nor pandas
# (a test checks they match sampling.FILTERS).
FILTER_HELP = "unlabeled, partial, labeled, all, excluded, validation, unlabeled:C, contains:C, lacks:C, subset:V"


class OutputFormat(str, enum.Enum):
    paths = "paths"
    csv = "csv"
    json = "json"


def sample(
    ctx: typer.Context,
    n: int | None = typer.Option(None, "-n", min=1, help="How many images (default: sampling.n in patchwork.yaml)."),
    strategy: str | None = typer.Option(
        None, "--strategy", "-s", help=f"{registry.listing()} (default: sampling.strategy in patchwork.yaml)."
    ),
    filters: list[str] = typer.Option(
        [],
        "--from",
        help=f"Which rows, repeatable, combined with AND: {FILTER_HELP} (default: unlabeled; all for disagree).",
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help=f"Seed for the random strategies ({registry.seeded_listing()}).",
    ),
    run: str | None = typer.Option(None, "--run", help="The run whose predictions to use (default: LATEST)."),
    output: OutputFormat = typer.Option(
        OutputFormat.paths, "--format", help="paths: one per line; csv or json: row, filepath, score, rank."
    ),
    project: ProjectOption = None,
):
    """Choose the images to label next: filter, then score, then select.

    Paths are printed so they work from the current directory (relative ones relative
    to it, absolute ones as stored), ready for `patchwork label --paths -` or any tool.
    """
    from patchwork_cli.sampling.sample import sample as choose_rows
    from patchwork_cli.store.paths import relative_to

    opened = open_from(ctx, project)
    chosen = choose_rows(
        opened, n or opened.config.sampling.n, strategy=strategy, filters=filters, seed=seed, run_id=run
    )
    if chosen.empty:
        asked = " ".join(f"--from {f}" for f in filters) if filters else "the default --from"
        say(f"nothing to sample: no row matches {asked}")
        return
    chosen["filepath"] = relative_to(chosen["filepath"], opened.directory)
    if output is OutputFormat.paths:
        typer.echo("\n".join(chosen["filepath"]))
    elif output is OutputFormat.csv:
        typer.echo(chosen.to_csv(index=False, lineterminator="\n"), nl=False)
    else:
        typer.echo(json.dumps(chosen.to_dict(orient="records"), indent=2))
