"""patchwork label: the labelling window over a sample or a list of paths, or edits from a CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from patchwork_cli.cli.common import ProjectOption, open_from, say


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
    grid: str | None = typer.Option(
        None,
        "--grid",
        metavar="RxC",
        help="Pages of R x C images (R, C from 1 to 5) for the class of --class: keys 1..9 or clicks mark "
        "the tiles that contain it, space accepts the page (default --from: unlabeled:CLASS).",
    ),
    class_name: str | None = typer.Option(None, "--class", help="The class of --grid."),
    advance_after_n: bool | None = typer.Option(
        None,
        "--advance-after-n/--no-advance-after-n",
        help="Multilabel projects: n (every unlabelled class: no) also shows the next image "
        "(default: labelling.advance_after_n in patchwork.yaml).",
    ),
    project: ProjectOption = None,
):
    """Label images in a window (keys: 1..9,0 classes, n rest no, x exclude, v validation, u undo, arrows, ? help)."""
    opened = open_from(ctx, project)
    if import_file is not None:
        count = opened.import_labels(import_file)
        say(f"imported {count} label edit(s) from {import_file}")
        return

    from patchwork_cli.labelling.grid_pages import GridPages
    from patchwork_cli.labelling.session import LabelSession, rows_for_paths
    from patchwork_cli.store.sources import read_path_list

    shape = _grid_shape(grid, class_name, opened.classes)
    if shape is not None and not filters and paths is None:
        filters = [f"unlabeled:{class_name}"]
    table = opened.labels()
    suggestions = None
    if paths is not None:
        if strategy or filters or n or seed is not None:
            raise typer.BadParameter("--paths chooses the images itself: drop --strategy, --from, -n and --seed")
        source = "<stdin>" if paths == "-" else paths
        rows = rows_for_paths(opened, table, read_path_list(paths), source)
    else:
        from patchwork_cli.sampling.label_errors import parse_suggestion
        from patchwork_cli.sampling.sample import sample

        chosen = sample(opened, n or opened.config.sampling.n, strategy=strategy, filters=filters, seed=seed)
        rows = chosen["row"].tolist()
        if "suggested" in chosen:  # disagree: the label its out-of-sample model suggests, for enter
            suggestions = {
                row: parse_suggestion(text, opened.classes) for row, text in zip(rows, chosen["suggested"], strict=True)
            }
    if not rows:
        say("nothing to label")
        return
    from patchwork_cli.labelling.display import run as show_window

    session = LabelSession(opened, rows, table, advance_after_n=advance_after_n, suggestions=suggestions)
    pages = None if shape is None else GridPages(session, shape, class_name)
    show_window(session, title=f"patchwork label - {opened.directory.name}", grid=pages)
    say(f"{session.edits} label edit(s) on {len(session)} image(s); labels.csv is up to date")


def _grid_shape(grid: str | None, class_name: str | None, classes: list[str]) -> tuple[int, int] | None:
    """The checked --grid (rows, columns) and --class, which go together; None without them."""
    from patchwork_cli.errors import PatchworkError
    from patchwork_cli.labelling.grid_pages import parse_grid
    from patchwork_cli.sampling.filters import check_class

    if grid is None and class_name is None:
        return None
    if grid is None:
        raise PatchworkError("--class names the class of a grid page: add --grid RxC (e.g. --grid 3x3)")
    if class_name is None:
        raise PatchworkError("--grid needs --class: the class its tiles are marked for")
    shape = parse_grid(grid)
    try:
        check_class(class_name, classes)
    except PatchworkError as error:
        raise PatchworkError(f"--class: {error}") from None
    return shape
