"""``loop report``: the loop's economics per retrain round (materializes the loop_report asset)."""

from __future__ import annotations

from typing import Optional

import typer

from loop_pipeline.cli.common import app, emit, fail, say
from loop_pipeline.config import ConfigError


@app.command("report")
def report_command(
    plot: Optional[str] = typer.Option(None, help="Also write the PNG plot to this path."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the report as an MLflow run."),
    frontier_model: Optional[str] = typer.Option(
        None, help="Price local requests' all-frontier cost at this model when no trace names the frontier model."
    ),
) -> None:
    """Per retrain round (each holdout_eval): champion and dataset version, SFT rows, coverage at the
    target agreement, out-of-scope escalation and cost ratio on the holdout; requests served, local
    share, shadow agreement and blended cost ratio live (the router's traces); the simulator's gold
    on replayed traffic; a flag with its causes on a round that serves less at the same target.
    Tables on stderr, a PNG and JSON under $LOOP_HOME/warehouse/report/, an MLflow run, one JSON line."""
    from loop_pipeline.defs.report.run import materialize_report

    try:
        emit(materialize_report(progress=say, plot=plot, log_to_mlflow=not no_mlflow, frontier_model=frontier_model))
    except (ConfigError, FileNotFoundError, RuntimeError, ValueError) as exc:
        fail(str(exc))
