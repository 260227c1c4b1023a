"""Data commands: simulate, ingest, materialize, thresholds sweep, datasets build, demo, dagster-home."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from loop_pipeline.cli.common import app, datasets_app, emit, fail, say, thresholds_app
from loop_pipeline.config import ConfigError


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
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.settings import LoopSettings
    from loop_pipeline.sim import SimulationConfig
    from loop_pipeline.sim import simulate as run_simulation

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
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = LoopSettings()
    try:
        if config is not None:
            chosen = SimulationConfig.from_yaml(config, given)
        else:
            chosen = settings.load(SimulationConfig, given)
        summary = run_simulation(chosen, out or settings.paths.landing, prices=settings.load(PriceTable), progress=say)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    emit(summary.to_dict())


@app.command("ingest")
def ingest_command(
    paths_in: list[str] = typer.Argument(..., metavar="PATH...", help="Files or folders (JSONL / JSON / Parquet); fsspec URLs work."),
    out: Optional[Path] = typer.Option(
        None, help="Output folder in the warehouse's table layout, replaced as a whole (default: $LOOP_HOME/ingested)."
    ),
    kind: str = typer.Option("auto", help="auto | trace | feedback: what native records are."),
    source_format: str = typer.Option(
        "auto",
        "--format",
        help="auto (detected per file) | native | otel (OTel GenAI spans as attribute objects) | otlp (OTLP/JSON, "
        "the Collector's file exporter) | openinference | langfuse | mlflow | litellm | openai-batch.",
    ),
    batch_input: Optional[list[str]] = typer.Option(
        None,
        "--batch-input",
        help="OpenAI Batch input JSONL joined to batch output lines by custom_id (repeatable); "
        "input files beside an output file are joined without it.",
    ),
) -> None:
    """Validate trace / feedback files offline: valid rows by day, the rest quarantined with a reason.

    Formats (detected per file unless --format says): native records, OTel GenAI spans, OTLP/JSON,
    OpenInference, Langfuse exports and ingestion batches, MLflow 3 traces, LiteLLM payloads, OpenAI Batch.

    Only LLM calls become traces; tool, agent and failed spans are counted as skipped.
    Scores, annotations and assessments become feedback.

    The summary keeps records_in = valid + duplicates + quarantined + skipped.
    Exit code 0 even when records are quarantined; 2 when nothing could be read.
    The Dagster ingest assets (`loop materialize`) read the landing folder into the warehouse instead.
    """
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.core.ingest import FORMAT_CHOICES, IngestConfig, IngestInputError, discover, ingest, write_result
    from loop_pipeline.settings import LoopSettings

    if kind not in ("auto", "trace", "feedback"):
        fail(f"--kind must be auto, trace or feedback, not {kind!r}")
    if source_format not in FORMAT_CHOICES:
        fail(f"--format must be one of {', '.join(FORMAT_CHOICES)}, not {source_format!r}")
    try:
        sources = discover(paths_in, record_kind=None if kind == "auto" else kind)
        batch_sources = [s.location for s in discover(batch_input)] if batch_input else []
    except IngestInputError as exc:
        fail(str(exc))
    if not sources:
        fail(f"no .jsonl, .ndjson, .json or .parquet files under {', '.join(paths_in)}")
    settings = LoopSettings()
    target = out or settings.paths.home / "ingested"
    try:
        config, prices = settings.load(IngestConfig), settings.load(PriceTable)
        # The rows wait beside the output (on its disk, not in memory) until they are written.
        result = ingest(
            sources, config, prices, progress=say, source_format=source_format, batch_inputs=batch_sources,
            spill_dir=target.parent,
        )
    except ConfigError as exc:
        fail(str(exc))
    with result:
        summary = result.summary()
        unreadable = summary["quarantined_by_reason"].get("unreadable_file", 0)
        readable = [s for s in sources if not s.unsupported]  # unsupported files are listed, never read
        if unreadable == len(readable):
            fail(f"none of the {len(readable)} file(s) could be read; see the quarantine reasons above")
        summary = write_result(result, target)
    say(f"wrote {target}")
    emit(summary)


@app.command()
def materialize(
    partition: Optional[list[str]] = typer.Option(None, "--partition", "-p", help="Day(s) to ingest (default: every landing day)."),
) -> None:
    """Materialize the ingest assets for landing days on the LOOP_HOME Dagster instance."""
    from loop_pipeline.runs import materialize_ingest

    try:
        results = materialize_ingest(partition or None, progress=say)
    except RuntimeError as exc:
        fail(str(exc))
    emit({"partitions": results})


def _ingested_folder(traces: Path) -> str:
    """A `loop ingest --out` folder is a warehouse of its own: its tables are scored there."""
    tables = traces / "raw_traces"
    if not (tables.is_dir() and any(tables.glob("*.parquet"))):
        fail(f"no trace tables under {tables}: run `loop ingest --out DIR` first")
    return str(traces)


@thresholds_app.command("sweep")
def thresholds_sweep(
    traces: Optional[Path] = typer.Option(
        None, help="Output folder of `loop ingest --out` (scored there). Default: LOOP_HOME's ingested tables."
    ),
    plot: Optional[Path] = typer.Option(None, help="Also write the precision-vs-volume plot here (PNG)."),
    mlflow: bool = typer.Option(True, help="Log one MLflow run per candidate threshold (--no-mlflow to skip)."),
) -> None:
    """Score every trace (the scoring assets), then per task type select a threshold on one half of
    the human reviews and certify it on the other (the kept set's estimated precision, with a
    bootstrap lower bound, at the target), else fall back loudly; compare filters when the traces
    carry the simulator's gold (docs/metrics.md)."""
    from loop_pipeline.core.scoring import describe_threshold
    from loop_pipeline.runs import materialize_scoring

    warehouse = _ingested_folder(traces) if traces is not None else None
    try:
        result = materialize_scoring(progress=say, warehouse_dir=warehouse, log_to_mlflow=mlflow)
    except (ConfigError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    for task_type, entry in result["thresholds"].items():
        say(describe_threshold(task_type, entry))
    if plot is not None:
        if not result.get("plot"):
            fail("score_thresholds wrote no plot")
        plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result["plot"], plot)
        result["plot"] = str(plot)
    emit(result)


@datasets_app.command("build")
def datasets_build(
    traces: Optional[Path] = typer.Option(
        None, help="Output folder of `loop ingest --out` (scored there first). Default: LOOP_HOME's scored tables."
    ),
    out: Optional[Path] = typer.Option(None, help="Datasets root (default: $LOOP_HOME/datasets); versions are folders in it."),
    mlflow: bool = typer.Option(True, help="Log the version to MLflow with the datasets as inputs (--no-mlflow to skip)."),
) -> None:
    """Redact, deduplicate and split scored traces into a new (or the same) dataset version
    (the training_datasets asset and its blocking expectations)."""
    from loop_pipeline.runs import materialize_datasets

    warehouse = _ingested_folder(traces) if traces is not None else None
    try:
        summary = materialize_datasets(
            progress=say,
            with_scoring=traces is not None,
            warehouse_dir=warehouse,
            datasets_dir=str(out) if out else None,
            log_to_mlflow=mlflow,
        )
    except (ConfigError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    say(f"dataset version {summary['version']} ({'new' if summary['created'] else 'unchanged, reused'})")
    for name, rows in summary["rows"].items():
        say(f"  {name:<8} {rows:>7} rows  {summary['counts'][name]}")
    emit(summary)


@app.command()
def demo(
    days: int = typer.Option(14, help="Days of CLINC150 traffic to simulate."),
    traces_per_day: int = typer.Option(500, help="Calls per day."),
    seed: int = typer.Option(0, help="Random seed."),
    domains: str = typer.Option(
        "banking,credit_cards,travel", help="CLINC150 domains of the in-scope traffic (comma-separated; 'all' for all 10)."
    ),
    train: bool = typer.Option(True, "--train/--no-train", help="Fine-tune SmolLM2-135M on the dataset (CPU: ~10 min)."),
    train_max_steps: Optional[int] = typer.Option(None, help="Cap the training steps of each round (default: the train config's)."),
    frontier_error_rate: Optional[float] = typer.Option(
        0.0, min=0.0, max=1.0,
        help="Share of calls the simulated frontier gets wrong (configs/simulate.yaml: 0.05; at 0.01 and above no threshold certified 95% agreement on the demo's holdout, see docs/metrics.md).",
    ),
    close_loop: bool = typer.Option(
        True, "--close-loop/--no-close-loop",
        help="After round one: serve the champion through the router, replay a fresh day with users' feedback, run round two, print loop report.",
    ),
) -> None:
    """The whole loop on embedded defaults: simulate CLINC150 traffic, then materialize the asset
    graph on it (ingest, scoring, datasets, LoRA training of SmolLM2-135M-Instruct, evaluation and
    registration) as one plan on the LOOP_HOME instance (progress on stderr)."""
    from loop_pipeline.demo import run_demo

    chosen = None if domains.strip() == "all" else tuple(d.strip() for d in domains.split(",") if d.strip())
    emit(
        run_demo(
            days=days,
            traces_per_day=traces_per_day,
            seed=seed,
            progress=say,
            domains=chosen,
            train=train,
            train_max_steps=train_max_steps,
            close_loop=close_loop,
            frontier_error_rate=frontier_error_rate,
        )
    )


@app.command("dagster-home")
def dagster_home() -> None:
    """Write the instance config (SQLite, or PostgreSQL from LOOP_PG_URL) and print DAGSTER_HOME."""
    from loop_pipeline.instance import ensure_dagster_home
    from loop_pipeline.settings import LoopSettings

    settings = LoopSettings()
    typer.echo(str(ensure_dagster_home(settings.paths.dagster_home, settings.pg_url)))
