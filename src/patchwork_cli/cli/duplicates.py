"""patchwork duplicates: the images that are copies of one another, on stdout for pipes."""

from __future__ import annotations

import json

import typer

from patchwork_cli.cli.common import JsonOption, ProjectOption, open_from, say

# evaluation.duplicates' defaults, spelled here so --help stays light (a test checks they agree)
DEFAULT_THRESHOLD, DEFAULT_FEATURE_THRESHOLD = 0.99, 0.92


def duplicates(
    ctx: typer.Context,
    threshold: float = typer.Option(
        DEFAULT_THRESHOLD,
        "--threshold",
        help="Near copies: the least correlation of two images' 32x32 thumbnails, a light crop allowed "
        "(above 0, at most 1).",
    ),
    feature_threshold: float = typer.Option(
        DEFAULT_FEATURE_THRESHOLD,
        "--feature-threshold",
        help="Near copies among images without thumbnails (imported vectors, older stores): the least "
        "cosine of their reduced features, each the other's nearest.",
    ),
    project: ProjectOption = None,
    as_json: JsonOption = False,
):
    """Groups of copies: exact (the same features bit for bit) and near (re-encoded, resized,
    lightly cropped: among each image's nearest by features and by thumbnail, the pairs whose
    thumbnails match), as CSV group,filepath,kind, one line per image (nothing when there are none).

    The groups are also written to duplicates.csv in the project: sampling then shows one image
    of a group and none of a group that holds a labelled image, and status counts them.
    """
    from patchwork_cli.evaluation.duplicates import find_duplicates
    from patchwork_cli.store.duplicate_groups import write_groups
    from patchwork_cli.store.paths import relative_to

    opened = open_from(ctx, project)
    groups = find_duplicates(opened, threshold, feature_threshold)
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
