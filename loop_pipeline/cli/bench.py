"""Benchmark commands: bench ingest, bench datasets (each a ratio against a baseline in the same run),
bench thresholds (the score-threshold procedure on many simulated weeks), bench economics (one round of
the loop on simulated traffic: coverage at target, accuracy against gold, cost, training speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from loop_pipeline.cli.common import bench_app, emit, fail, say


@bench_app.command("ingest")
def bench_ingest(
    rows: int = typer.Option(1_000_000, help="Synthetic traces (native) or export requests (otlp) to generate."),
    bad_rate: float = typer.Option(0.0, help="Share of broken lines (truncated, negative, wrong type, bad timestamp / no span id)."),
    workdir: Optional[Path] = typer.Option(None, help="Where the generated files go (default: a temporary folder)."),
    repeat: int = typer.Option(1, help="Runs per phase, each in a fresh process; the fastest counts."),
    source_format: str = typer.Option(
        "native",
        "--format",
        help="native: our JSONL, baseline polars.read_ndjson of 64 MiB blocks of whole lines | otlp: OTLP/JSON, one chat span per export request, "
        "baseline json.loads of every line.",
    ),
) -> None:
    """Time the ingest path against bare parsing of the same synthetic file."""
    from loop_pipeline.bench import bench_ingest as run_bench

    if rows < 1:
        fail("--rows must be at least 1")
    if not 0.0 <= bad_rate < 1.0:
        fail("--bad-rate must be in [0, 1)")
    if source_format not in ("native", "otlp"):
        fail(f"--format must be native or otlp, not {source_format!r}")
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"--workdir {workdir}: {exc}")
    if repeat < 1:
        fail("--repeat must be at least 1")
    result = run_bench(rows=rows, bad_rate=bad_rate, workdir=workdir, progress=say, repeat=repeat, source_format=source_format)
    emit(result)


@bench_app.command("datasets")
def bench_datasets(
    rows: int = typer.Option(1_000_000, help="Synthetic scored traces to generate."),
    workdir: Optional[Path] = typer.Option(None, help="Where the generated tables go (default: a temporary folder)."),
    repeat: int = typer.Option(1, help="Runs per phase, each in a fresh process; the fastest counts."),
) -> None:
    """Time redaction + dedup + split + dataset shaping against a bare read of the scored table."""
    from loop_pipeline.bench import bench_datasets as run_bench

    if rows < 1 or repeat < 1:
        fail("--rows and --repeat must be at least 1")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    emit(run_bench(rows=rows, workdir=workdir, progress=say, repeat=repeat))


@bench_app.command("thresholds")
def bench_thresholds(
    seeds: str = typer.Option("0-9", help="Seeds to simulate: 0-9, 3, 0,4,7 or 0-2,5."),
    domains: Optional[str] = typer.Option(
        None, help="clinc150 domains, comma-separated (e.g. banking,credit_cards,travel), or all. Default: configs/simulate.yaml's."
    ),
    days: Optional[int] = typer.Option(None, help="Days per simulated week (default: configs/simulate.yaml's)."),
    traces_per_day: Optional[int] = typer.Option(None, help="Calls per day (default: configs/simulate.yaml's)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every row and the totals to this JSON file."),
) -> None:
    """Try the score-threshold procedure on many simulated weeks: per seed the reviews on each side,
    the rule (certified threshold or fallback), the filters' true error rates at equal volume, and the
    true precision of the kept set on fresh traffic from the same simulator."""
    import json

    from loop_pipeline.bench.thresholds_trial import HEADER, TrialConfigs, format_row, format_totals, parse_seeds, run_trial
    from loop_pipeline.config import ConfigError
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.core.ingest import IngestConfig
    from loop_pipeline.core.scoring import ScoringConfig
    from loop_pipeline.core.tasks import TasksConfig
    from loop_pipeline.settings import LoopSettings
    from loop_pipeline.sim import SimulationConfig

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        fail(f"--{exc}")
    overrides: dict = {"days": days, "traces_per_day": traces_per_day}
    if domains is not None:
        overrides["domains"] = None if domains.strip() == "all" else [d.strip() for d in domains.split(",") if d.strip()]
    settings = LoopSettings()
    try:
        configs = TrialConfigs(
            simulation=settings.load(SimulationConfig, {k: v for k, v in overrides.items() if v is not None or k == "domains"}),
            scoring=settings.load(ScoringConfig),
            tasks=settings.load(TasksConfig),
            ingest=settings.load(IngestConfig),
            prices=settings.load(PriceTable),
        )
        result = run_trial(seed_list, configs, progress=say)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(HEADER)
    for row in result["rows"]:
        typer.echo(format_row(row))
    typer.echo(format_totals(result["totals"], result["precision_target"]))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str), encoding="utf-8")
    emit({"benchmark": "thresholds", "seeds": seed_list, "totals": result["totals"], "json": str(json_out) if json_out else None})


@bench_app.command("economics")
def bench_economics(
    dataset: str = typer.Option("clinc150", help="clinc150 (bundled) | labeled (--input FILE with a text and a label column)."),
    domains: str = typer.Option("all", help="clinc150: comma-separated domains (e.g. banking,credit_cards,travel) or all."),
    input_path: Optional[str] = typer.Option(None, "--input", help="labeled: a CSV, TSV, JSONL, JSON or Parquet file."),
    text_column: Optional[str] = typer.Option(None, help="labeled: the text column (default: configs/simulate.yaml's, text)."),
    label_column: Optional[str] = typer.Option(None, help="labeled: the label column (default: configs/simulate.yaml's, label)."),
    days: int = typer.Option(14, min=1, help="Days of traffic to simulate."),
    traces_per_day: int = typer.Option(1000, min=1, help="Calls per day."),
    seed: int = typer.Option(0, min=0, help="Random seed of the simulator."),
    frontier_error_rate: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="Share of calls the simulated frontier gets wrong (default: configs/simulate.yaml's, 0.05)."
    ),
    train_max_steps: Optional[int] = typer.Option(
        None, min=1, help="Cap the training steps (a CPU run); the JSON says train_steps_capped and what an epoch needs."
    ),
    train_config: Optional[str] = typer.Option(
        None, help="A train YAML, or a name under configs/train/ (default: smollm2-clinc, what lora_adapter trains with)."
    ),
    home: Optional[Path] = typer.Option(
        None, help="A new or empty folder for this bench's LOOP_HOME (default: a fresh temporary folder; yours is not touched)."
    ),
    out: Optional[Path] = typer.Option(None, help="Also write the JSON to this file."),
) -> None:
    """One round of the loop on simulated traffic, measured: simulate, then ingest, scoring, datasets,
    training, evaluation and registration as one Dagster plan; ends with one JSON line (coverage at the
    agreement target per task type, out-of-scope escalated, routed vs all-frontier accuracy against the
    simulator's gold, blended cost ratio, training time and tokens/s, holdout size). Progress on stderr."""
    import json

    from loop_pipeline.bench.economics import run_economics
    from loop_pipeline.config import ConfigError

    chosen = None if domains.strip() == "all" else tuple(d.strip() for d in domains.split(",") if d.strip())
    try:
        result = run_economics(
            dataset=dataset, domains=chosen, input_path=input_path, text_column=text_column, label_column=label_column,
            days=days, traces_per_day=traces_per_day, seed=seed, frontier_error_rate=frontier_error_rate,
            train_max_steps=train_max_steps, train_config=train_config, home=home, progress=say,
        )
    except (ConfigError, ValueError, FileNotFoundError) as exc:  # a bad option, file, column or train config (ConfigError is a ValueError)
        fail(str(exc))
    except RuntimeError as exc:  # a failed run or a blocked dataset version: the run's own error
        fail(str(exc), code=1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    emit(result)
