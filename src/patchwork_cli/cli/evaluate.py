"""patchwork evaluate: how good is a run, in numbers and pictures."""

from __future__ import annotations

import json

import typer

from patchwork_cli.cli.common import JsonOption, ProjectOption, open_from, say


def evaluate(
    ctx: typer.Context,
    run: str | None = typer.Option(None, "--run", help="The run to evaluate (default: LATEST)."),
    all_runs: bool = typer.Option(False, "--runs", help="Compare every run: one row each."),
    project: ProjectOption = None,
    as_json: JsonOption = False,
):
    """Metrics per class and macro-averaged, on validation and training rows, plus plots in reports/."""
    from patchwork_cli.evaluation.report import evaluate_run, run_summaries
    from patchwork_cli.evaluation.tables import format_metrics_table, runs_table

    opened = open_from(ctx, project)
    if all_runs:
        summaries = run_summaries(opened)
        typer.echo(json.dumps(summaries, indent=2) if as_json else runs_table(summaries))
        return
    result = evaluate_run(opened, run_id=run)
    metrics, plots = result.metrics, result.plots
    typer.echo(
        json.dumps(metrics.as_dict(), indent=2) if as_json else f"run {result.run_id}\n" + format_metrics_table(metrics)
    )
    confusion = f", confusion matrix: {plots.confusion}" if plots.confusion else ""
    say(
        f"plots: {plots.directory}/ ({len(plots.histograms)} histogram(s)){confusion}, "
        f"learning curve: {plots.learning_curve}"
    )
