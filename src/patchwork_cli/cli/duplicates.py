"""patchwork duplicates: the images that are copies of one another, on stdout for pipes."""

from __future__ import annotations

import json

import typer

from patchwork_cli.cli.common import JsonOption, ProjectOption, open_from, say

DEFAULT_THRESHOLD = 0.92  # evaluation.duplicates.DEFAULT_THRESHOLD, spelled here so --help stays light


def duplicates(
    ctx: typer.Context,
    threshold: float = typer.Option(
        DEFAULT_THRESHOLD,
        "--threshold",
        help="Near copies: the least cosine of two images' reduced features (above 0, at most 1).",
    ),
    project: ProjectOption = None,
    as_json: JsonOption = False,
):
    """Groups of copies: exact (the same features bit for bit) and near (re-encoded, resized,
    lightly cropped), as CSV group,filepath,kind, one line per image (nothing when there are none).

    The groups are also written to duplicates.csv in the project: sampling then shows one image
    of a group and none of a group that holds a labelled image, and status counts them.
    """
    from patchwork_cli.evaluation.duplicates import find_duplicates
    from patchwork_cli.store.duplicate_groups import write_groups
    from patchwork_cli.store.paths import relative_to

    opened = open_from(ctx, project)
    groups = find_duplicates(opened, threshold)
    write_groups(opened.directory, groups)
    if groups.empty:
        say("no copies found")
        return
    say(f"{groups['group'].nunique()} group(s) of copies, {len(groups)} image(s); written to duplicates.csv")
    shown = groups.assign(filepath=relative_to(groups["filepath"], opened.directory))
    if as_json:
        typer.echo(json.dumps(shown.to_dict(orient="records"), indent=2))
    else:
        typer.echo(shown.to_csv(index=False, lineterminator="\n"), nl=False)
