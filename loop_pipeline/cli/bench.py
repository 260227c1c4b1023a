"""Benchmark commands: bench ingest, bench datasets (each a ratio against a baseline in the same run)."""

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
        help="native: our JSONL, baseline polars.read_ndjson | otlp: OTLP/JSON, one chat span per export request, "
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
