"""The ``loop`` command.

Every command ends its output with one JSON line (the machine-readable summary), so scripts can
take ``tail -n 1``. Heavy libraries are imported inside commands: ``loop --help`` stays fast.
"""

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

import loop_pipeline  # noqa: F401  (sets the no-telemetry environment first)

app = typer.Typer(
    name="loop",
    help="Turn production LLM traffic into a cheaper fine-tuned model: simulate, ingest, bench, demo.",
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


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _emit(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, sort_keys=True))


def _fail(message: str, code: int = 2) -> None:
    _say(f"error: {message}")
    raise typer.Exit(code)


@app.command()
def simulate(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with SimulationConfig fields (see configs/simulate.yaml)."),
    dataset: Optional[str] = typer.Option(None, help="clinc150 (bundled) | labeled | restaurant8k | dialogsum."),
    input_path: Optional[str] = typer.Option(None, "--input", help="Dataset file for labeled / restaurant8k / dialogsum."),
    text_column: Optional[str] = typer.Option(None, help="Text column of a labeled file."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a labeled file."),
    task_type: Optional[str] = typer.Option(None, help="Task type written on each trace (default per dataset)."),
    domains: Optional[str] = typer.Option(None, help="clinc150: comma-separated domains, e.g. banking,credit_cards,travel."),
    days: Optional[int] = typer.Option(None, help="Days of traffic."),
    start_date: Optional[str] = typer.Option(None, help="First day (UTC, YYYY-MM-DD)."),
    traces_per_day: Optional[int] = typer.Option(None, help="Calls per day."),
    frontier_error_rate: Optional[float] = typer.Option(None, help="Share of wrong frontier outputs."),
    human_review_rate: Optional[float] = typer.Option(None, help="Share of traces a human reviews."),
    rushed_user_rate: Optional[float] = typer.Option(None, help="Share of users who accept wrong outputs often."),
    out_of_scope_rate: Optional[float] = typer.Option(None, help="clinc150: share of out-of-scope queries."),
    seed: Optional[int] = typer.Option(None, help="Random seed; same seed, same files."),
    out: Optional[Path] = typer.Option(None, help="Landing folder to write (default: $LOOP_HOME/landing)."),
) -> None:
    """Turn a labeled dataset into production-like traces and feedback in a landing folder."""
    from loop_pipeline.core.simulate import SimulationConfig
    from loop_pipeline.core.simulate import simulate as run_simulation
    from loop_pipeline.settings import ConfigError, paths

    overrides = {
        "dataset": dataset,
        "input_path": input_path,
        "text_column": text_column,
        "label_column": label_column,
        "task_type": task_type,
        "domains": [d.strip() for d in domains.split(",") if d.strip()] if domains else None,
        "days": days,
        "start_date": start_date,
        "traces_per_day": traces_per_day,
        "frontier_error_rate": frontier_error_rate,
        "human_review_rate": human_review_rate,
        "rushed_user_rate": rushed_user_rate,
        "out_of_scope_rate": out_of_scope_rate,
        "seed": seed,
    }
    try:
        if config is not None:
            base = SimulationConfig.from_yaml(config).to_dict()
            base.update({k: v for k, v in overrides.items() if v is not None})
            settings = SimulationConfig.from_mapping(base)
        else:
            settings = SimulationConfig.from_config(overrides)
        summary = run_simulation(settings, out or paths().landing, progress=_say)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _emit(summary.to_dict())


@app.command("ingest")
def ingest_command(
    paths_in: list[str] = typer.Argument(..., metavar="PATH...", help="Files or folders (JSONL / Parquet); fsspec URLs work."),
    out: Optional[Path] = typer.Option(None, help="Output folder, replaced as a whole (default: $LOOP_HOME/ingested)."),
    kind: str = typer.Option("auto", help="auto | trace | feedback: what the records are."),
) -> None:
    """Validate trace / feedback files: valid rows by day, the rest quarantined with a reason.

    Exit code 0 even when records are quarantined; 2 when nothing could be read.
    """
    from loop_pipeline.core.ingest import IngestInputError, discover, ingest, write_result
    from loop_pipeline.settings import ConfigError, paths

    if kind not in ("auto", "trace", "feedback"):
        _fail(f"--kind must be auto, trace or feedback, not {kind!r}")
    try:
        sources = discover(paths_in, record_kind=None if kind == "auto" else kind)
    except IngestInputError as exc:
        _fail(str(exc))
    if not sources:
        _fail(f"no .jsonl, .ndjson, .json or .parquet files under {', '.join(paths_in)}")
    try:
        result = ingest(sources, progress=_say)
    except ConfigError as exc:
        _fail(str(exc))
    summary = result.summary()
    unreadable = summary["quarantined_by_reason"].get("unreadable_file", 0)
    if unreadable == len(sources):
        _fail(f"none of the {len(sources)} file(s) could be read; see the quarantine reasons above")
    target = out or paths().home / "ingested"
    write_result(result, target)
    _say(f"wrote {target}")
    _emit(summary)


@app.command()
def materialize(
    partition: Optional[list[str]] = typer.Option(None, "--partition", "-p", help="Day(s) to ingest (default: every landing day)."),
) -> None:
    """Materialize the ingest assets for landing days on the LOOP_HOME Dagster instance."""
    from loop_pipeline.runs import materialize_ingest

    results = materialize_ingest(partition or None, progress=_say)
    _emit({"partitions": results})


@app.command()
def demo(
    days: int = typer.Option(7, help="Days of CLINC150 traffic to simulate."),
    traces_per_day: int = typer.Option(1000, help="Calls per day."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """The whole loop on embedded defaults: simulate CLINC150 traffic, then ingest it through Dagster."""
    from loop_pipeline.runs import run_demo

    _emit(run_demo(days=days, traces_per_day=traces_per_day, seed=seed, progress=_say))


@app.command("dagster-home")
def dagster_home() -> None:
    """Write the instance config (SQLite, or PostgreSQL from LOOP_PG_URL) and print DAGSTER_HOME."""
    from loop_pipeline.instance import ensure_dagster_home

    typer.echo(str(ensure_dagster_home()))


@app.command()
def train(
    config: Path = typer.Option(..., "--config", help="Train config YAML (see configs/train/tiny.yaml)."),
) -> None:
    """LoRA SFT (+ optional KTO / DPO) on a dataset version; same as `python -m loop_pipeline.core.training`."""
    from loop_pipeline.core.training import cli as training_cli

    code = training_cli(["--config", str(config)])
    if code:
        raise typer.Exit(code)


@thresholds_app.command("sweep")
def thresholds_sweep(
    traces: Optional[Path] = typer.Option(
        None, help="Output folder of `loop ingest` (traces/ and feedback/). Default: LOOP_HOME's ingested tables."
    ),
    plot: Optional[Path] = typer.Option(None, help="Also write the precision-vs-volume plot here (PNG)."),
    mlflow: bool = typer.Option(True, help="Log one MLflow run per candidate threshold (--no-mlflow to skip)."),
) -> None:
    """Score every trace, then per task type pick the loosest threshold whose precision against
    human review has a Wilson lower bound at the target; compare filters when gold labels exist."""
    from loop_pipeline.core.scoring import describe_threshold
    from loop_pipeline.core.scoring_run import load_traces_and_feedback, run_sweep
    from loop_pipeline.core.tracking import TrackingTarget
    from loop_pipeline.settings import ConfigError

    try:
        frames = load_traces_and_feedback(traces)
        result = run_sweep(*frames, tracking=TrackingTarget.default() if mlflow else None, plot_path=plot, progress=_say)
    except (ConfigError, FileNotFoundError) as exc:
        _fail(str(exc))
    for task_type, entry in result["thresholds"].items():
        _say(describe_threshold(task_type, entry))
    _emit(result)


@datasets_app.command("build")
def datasets_build(
    traces: Optional[Path] = typer.Option(
        None, help="Output folder of `loop ingest` (scored here, thresholds swept in-process). Default: LOOP_HOME's scored tables."
    ),
    out: Optional[Path] = typer.Option(None, help="Datasets root (default: $LOOP_HOME/datasets); versions are folders in it."),
    mlflow: bool = typer.Option(True, help="Log the version to MLflow with the datasets as inputs (--no-mlflow to skip)."),
) -> None:
    """Redact, deduplicate and split scored traces into a new (or the same) dataset version."""
    from loop_pipeline.core.datasets import build_dataset_version
    from loop_pipeline.core.scoring_run import load_scored
    from loop_pipeline.core.tracking import TrackingTarget
    from loop_pipeline.settings import ConfigError, paths

    try:
        scored, raw, thresholds, days = load_scored(traces, progress=_say)
        summary = build_dataset_version(
            scored,
            raw,
            thresholds,
            out or paths().datasets,
            days,
            tracking=TrackingTarget.default() if mlflow else None,
            progress=_say,
        )
    except (ConfigError, FileNotFoundError) as exc:
        _fail(str(exc))
    _say(f"dataset version {summary['version']} ({'new' if summary['created'] else 'unchanged, reused'})")
    for name, rows in summary["rows"].items():
        _say(f"  {name:<8} {rows:>7} rows  {summary['counts'][name]}")
    _emit(summary)


@bench_app.command("ingest")
def bench_ingest(
    rows: int = typer.Option(1_000_000, help="Synthetic traces to generate."),
    bad_rate: float = typer.Option(0.0, help="Share of broken lines (truncated, negative, wrong type, bad timestamp)."),
    workdir: Optional[Path] = typer.Option(None, help="Where the generated files go (default: a temporary folder)."),
    repeat: int = typer.Option(1, help="Runs per phase, each in a fresh process; the fastest counts."),
) -> None:
    """Time the ingest path against bare polars.read_ndjson on the same synthetic traces."""
    from loop_pipeline.core.bench import bench_ingest as run_bench

    if rows < 1:
        _fail("--rows must be at least 1")
    if not 0.0 <= bad_rate < 1.0:
        _fail("--bad-rate must be in [0, 1)")
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"--workdir {workdir}: {exc}")
    if repeat < 1:
        _fail("--repeat must be at least 1")
    result = run_bench(rows=rows, bad_rate=bad_rate, workdir=workdir, progress=_say, repeat=repeat)
    _emit(result)


@bench_app.command("datasets")
def bench_datasets(
    rows: int = typer.Option(1_000_000, help="Synthetic scored traces to generate."),
    workdir: Optional[Path] = typer.Option(None, help="Where the generated tables go (default: a temporary folder)."),
    repeat: int = typer.Option(1, help="Runs per phase, each in a fresh process; the fastest counts."),
) -> None:
    """Time redaction + dedup + split + dataset shaping against a bare read of the scored table."""
    from loop_pipeline.core.bench import bench_datasets as run_bench

    if rows < 1 or repeat < 1:
        _fail("--rows and --repeat must be at least 1")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    _emit(run_bench(rows=rows, workdir=workdir, progress=_say, repeat=repeat))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
