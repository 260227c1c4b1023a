"""The Typer app, its sub-apps and the output helpers every command uses."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer

app = typer.Typer(
    name="loop",
    help="Turn production LLM traffic into a cheaper fine-tuned model: simulate, ingest, score, build datasets, "
    "train, evaluate, promote / roll back, bench, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
thresholds_app = typer.Typer(help="Quality-score thresholds per task type, compared in MLflow.", no_args_is_help=True)
app.add_typer(thresholds_app, name="thresholds")
datasets_app = typer.Typer(help="Versioned SFT / KTO / DPO / holdout datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
bench_app = typer.Typer(help="Benchmarks, each timed against a baseline in the same run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def say(message: str) -> None:
    typer.echo(message, err=True)


def emit(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, sort_keys=True, default=str))


def fail(message: str, code: int = 2) -> NoReturn:
    say(f"error: {message}")
    raise typer.Exit(code)
