"""patchwork label: the labelling window over a sample or a list of paths, or edits from a CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ProjectOption, open_from, say


def label(
    ctx: typer.Context,
    strategy: str | None = typer.Option(
        None, "--strategy", "-s", help="How to choose the images (default: sampling.strategy in patchwork.yaml)."
    ),
    filters: list[str] = typer.Option(
        [], "--from", help="Which rows to choose from, repeatable (AND): unlabeled (default), partial, ..."
    ),
    n: int | None = typer.Option(
        None, "-n", min=1, help="How many images to label (default: sampling.n in patchwork.yaml)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the strategies that draw at random."),
    paths: str | None = typer.Option(
        None, "--paths", help="Label these images instead: a file with one path per line, or - for stdin."
    ),
    import_file: Path | None = typer.Option(
        None,
        "--import",
        help="Apply label edits from a CSV with a filepath column and any of the class columns, "
        "exclude, validation, subset. Empty cells leave a value as it is.",
    ),
    project: ProjectOption = None,
):
    """Label images in a window (keys: 1..9,0 classes, n rest no, x exclude, v validation, arrows, ? help)."""
    opened = open_from(ctx, project)
    if import_file is not None:
        count = opened.import_labels(import_file)
        say(f"imported {count} label edit(s) from {import_file}")
        return

    from ..labelling import LabelSession, rows_for_paths
    from ..sources import read_path_list

    table = opened.labels()
    if paths is not None:
        if strategy or filters or n or seed is not None:
            raise typer.BadParameter("--paths chooses the images itself: drop --strategy, --from, -n and --seed")
        source = "<stdin>" if paths == "-" else paths
        rows = rows_for_paths(opened, table, read_path_list(paths), source)
    else:
        from ..sampling import sample

        chosen = sample(opened, n or opened.config.sampling.n, strategy=strategy, filters=filters, seed=seed)
        rows = chosen["row"].tolist()
    if not rows:
        say("nothing to label")
        return
    from .. import viewer

    session = LabelSession(opened, rows, table)
    viewer.run(session, title=f"patchwork label - {opened.directory.name}")
    say(f"{session.edits} label edit(s) on {len(session)} image(s); labels.csv is up to date")
