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
    paths_in: list[str] = typer.Argument(..., metavar="PATH...", help="Files or folders (JSONL / JSON / Parquet); fsspec URLs work."),
    out: Optional[Path] = typer.Option(None, help="Output folder, replaced as a whole (default: $LOOP_HOME/ingested)."),
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
    """Validate trace / feedback files: valid rows by day, the rest quarantined with a reason.

    Formats (detected per file unless --format says): native records, OTel GenAI spans, OTLP/JSON,
    OpenInference, Langfuse exports and ingestion batches, MLflow 3 traces, LiteLLM payloads, OpenAI Batch.

    Only LLM calls become traces; tool, agent and failed spans are counted as skipped.
    Scores, annotations and assessments become feedback.

    The summary keeps records_in = valid + duplicates + quarantined + skipped.
    Exit code 0 even when records are quarantined; 2 when nothing could be read.
    """
    from loop_pipeline.core.ingest import FORMAT_CHOICES, IngestInputError, discover, ingest, write_result
    from loop_pipeline.settings import ConfigError, paths

    if kind not in ("auto", "trace", "feedback"):
        _fail(f"--kind must be auto, trace or feedback, not {kind!r}")
    if source_format not in FORMAT_CHOICES:
        _fail(f"--format must be one of {', '.join(FORMAT_CHOICES)}, not {source_format!r}")
    try:
        sources = discover(paths_in, record_kind=None if kind == "auto" else kind)
        batch_sources = [s.location for s in discover(batch_input)] if batch_input else []
    except IngestInputError as exc:
        _fail(str(exc))
    if not sources:
        _fail(f"no .jsonl, .ndjson, .json or .parquet files under {', '.join(paths_in)}")
    try:
        result = ingest(sources, progress=_say, source_format=source_format, batch_inputs=batch_sources)
    except ConfigError as exc:
        _fail(str(exc))
    summary = result.summary()
    unreadable = summary["quarantined_by_reason"].get("unreadable_file", 0)
    if unreadable == len(sources):
        _fail(f"none of the {len(sources)} file(s) could be read; see the quarantine reasons above")
    target = out or paths().home / "ingested"
    summary = write_result(result, target)
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
    domains: str = typer.Option(
        "banking,credit_cards,travel", help="CLINC150 domains of the in-scope traffic (comma-separated; 'all' for all 10)."
    ),
    train: bool = typer.Option(True, "--train/--no-train", help="Fine-tune SmolLM2-135M on the dataset (CPU: ~10 min)."),
    train_max_steps: Optional[int] = typer.Option(None, help="Cap the training steps (default: one epoch)."),
) -> None:
    """The whole loop on embedded defaults: simulate CLINC150 traffic, ingest, score and version it
    through Dagster, then fine-tune SmolLM2-135M-Instruct with LoRA (progress on stderr)."""
    from loop_pipeline.runs import run_demo

    chosen = None if domains.strip() == "all" else tuple(d.strip() for d in domains.split(",") if d.strip())
    _emit(
        run_demo(
            days=days,
            traces_per_day=traces_per_day,
            seed=seed,
            progress=_say,
            domains=chosen,
            train=train,
            train_max_steps=train_max_steps,
        )
    )


@app.command("eval")
def eval_command(
    model: Optional[str] = typer.Option(None, help="A model folder to evaluate instead of the latest training run's."),
    adapter: Optional[str] = typer.Option(None, help="A LoRA adapter folder applied on --model."),
    system_prompt: Optional[str] = typer.Option(None, help="keep | drop: the prompt transform (default: as trained; keep for --model)."),
    max_examples: Optional[int] = typer.Option(None, help="Evaluate on the first N holdout requests."),
) -> None:
    """Evaluate a candidate on the frozen holdout: agreement per task type, the confidence threshold
    that reaches the target agreement (with its guarantee), coverage, out-of-scope escalation, the
    blended cost ratio and the promotion gate's decision with its reasons. Registers nothing."""
    from loop_pipeline.runs import eval_summary, evaluate_candidate_now
    from loop_pipeline.settings import ConfigError

    if system_prompt not in (None, "keep", "drop"):
        _fail(f"--system-prompt must be keep or drop, got {system_prompt!r}")
    if adapter and not model:
        _fail("--adapter needs --model (the base it applies to)")
    try:
        outcome = evaluate_candidate_now(model, adapter, system_prompt, max_examples, progress=_say)
    except (ConfigError, FileNotFoundError) as exc:
        _fail(str(exc))
    _emit(eval_summary(outcome))


def _move_alias(action: str, move_fn, model_name: Optional[str]) -> None:
    """Run a promote / rollback on the LOOP_HOME registry; a move that cannot happen exits 2 saying why."""
    from mlflow.exceptions import MlflowException

    from loop_pipeline.core.evaluation import EvalConfig
    from loop_pipeline.core.registry import RegistryError
    from loop_pipeline.core.tracking import TrackingTarget

    client = TrackingTarget.default().client()
    try:
        move = move_fn(client, model_name or EvalConfig.load().model_name)
    except (RegistryError, MlflowException) as exc:
        _fail(str(exc))
    _say(f"{move.model_name}: champion v{move.champion} (previous: {move.previous})")
    _emit({"action": action, **move.to_dict()})


@app.command("promote")
def promote_command(
    version: str = typer.Option(..., help="Registered model version to make the champion."),
    reason: str = typer.Option(..., help="Why (recorded on the version and the registered model)."),
    model_name: Optional[str] = typer.Option(None, help="Registered model (default: evaluation.yaml model_name)."),
) -> None:
    """Move alias `champion` to a version by hand; the old champion becomes `previous`."""
    from loop_pipeline.core.registry import promote

    _move_alias("promote", lambda client, name: promote(client, name, version, reason), model_name)


@app.command("rollback")
def rollback_command(
    reason: str = typer.Option(..., help="Why (recorded on the version and the registered model)."),
    model_name: Optional[str] = typer.Option(None, help="Registered model (default: evaluation.yaml model_name)."),
) -> None:
    """Move alias `champion` back to `previous` (and `previous` to the version rolled away from)."""
    from loop_pipeline.core.registry import rollback

    _move_alias("rollback", lambda client, name: rollback(client, name, reason), model_name)


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
    rows: int = typer.Option(1_000_000, help="Synthetic traces (native) or export requests (otlp) to generate."),
    bad_rate: float = typer.Option(0.0, help="Share of broken lines (truncated, negative, wrong type, bad timestamp / no span id)."),
    workdir: Optional[Path] = typer.Option(None, help="Where the generated files go (default: a temporary folder)."),
    repeat: int = typer.Option(1, help="Runs per phase, each in a fresh process; the fastest counts."),
    source_format: str = typer.Option(
        "native",
        "--format",
        help="native: our JSONL, baseline polars.read_ndjson | otlp: OTLP/JSON, one chat span per export request, "
        "baseline json.loads of every line.",
    ),
) -> None:
    """Time the ingest path against bare parsing of the same synthetic file."""
    from loop_pipeline.core.bench import bench_ingest as run_bench

    if rows < 1:
        _fail("--rows must be at least 1")
    if not 0.0 <= bad_rate < 1.0:
        _fail("--bad-rate must be in [0, 1)")
    if source_format not in ("native", "otlp"):
        _fail(f"--format must be native or otlp, not {source_format!r}")
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"--workdir {workdir}: {exc}")
    if repeat < 1:
        _fail("--repeat must be at least 1")
    result = run_bench(rows=rows, bad_rate=bad_rate, workdir=workdir, progress=_say, repeat=repeat, source_format=source_format)
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
